# tap.bash - TAP helpers for the scripted tests in test/t.  Source it after
# cd-ing to the checkout; prove runs only *.sh, so this file is not a test.
#
#   ok STATUS DESCRIPTION   a TAP line from an exit status
#   is GOT EXPECTED DESC    a TAP line comparing two strings, with a
#                           diagnostic (each line of the values indented)
#   tap_exit                exit 1 if any test point failed, else 0

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
