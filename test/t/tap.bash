# tap.bash - TAP helpers for the scripted tests in test/t.  Source it after
# cd-ing to the checkout; prove runs only *.sh, so this file is not a test.
#
#   ok STATUS DESCRIPTION   a TAP line from an exit status
#   is GOT EXPECTED DESC    a TAP line comparing two strings, with a
#                           diagnostic (each line of the values indented)
#   tap_exit                exit 1 if any test point failed, else 0
#   wait_for SQL SECONDS    poll the caller's q until SQL returns t
#   tap_require_torch       PY=python with torch, or skip all and exit

tap_n=0
tap_failed=0
ok() {
	tap_n=$((tap_n + 1))
	if [ "$1" = 0 ]; then
		echo "ok $tap_n - $2"
	else
		echo "not ok $tap_n - $2"
		tap_failed=$((tap_failed + 1))
	fi
}
is() {
	[ "$1" = "$2" ]
	ok $? "$3"
	[ "$1" = "$2" ] || { echo "got:      $1"; echo "expected: $2"; } | head -n 40 | sed 's/^/#   /'
}
tap_exit() { exit $(( tap_failed > 0 )); }

# wait_for SQL SECONDS: poll the caller's q (psql -At against its database)
# every 0.1 s until the query returns t; status 1 if it never does.
wait_for() {
	local i
	for ((i = 0; i < $2 * 10; i++)); do
		[ "$(q -c "$1" 2>/dev/null)" = t ] && return 0
		sleep 0.1
	done
	return 1
}

# tap_require_torch: set PY to the Python with torch and torchvision, or
# print TAP's skip-all line and exit when they are not installed.
tap_require_torch() {
	PY=/usr/bin/python3
	if ! $PY -c 'import torch, torchvision' 2>/dev/null; then
		echo "1..0 # SKIP python3-torch / python3-torchvision not installed"
		exit 0
	fi
}
