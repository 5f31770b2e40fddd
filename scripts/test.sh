#!/usr/bin/env bash
# Run every test: the core's C unit tests (no server), then pg_regress,
# pgTAP and the scripted server tests against a throwaway cluster that this
# script creates, starts and removes.  Any failure makes it exit non-zero.
#
#   scripts/test.sh              everything
#   TL_SKIP_SANITIZE=1 scripts/test.sh   skip the ASan/UBSan unit-test pass
#   scripts/test.sh test/t/soak.sh test/pgtap/errors.sql
#                                only the named scripted or pgTAP tests, on a
#                                fresh build and cluster (for development)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/pgcluster.sh

# As root the server runs as an unprivileged OS user that must read the
# checkout and the dataset beside it.  If the checkout sits where that user
# can't reach (say under /root), run from a readable copy instead of failing.
if [ "$(id -u)" = 0 ] && [ -z "${TL_RELOCATED:-}" ] && ! tl_as_server test -x "$TL_REPO/scripts"; then
	copy=$(mktemp -d /tmp/transfer-test.XXXXXX)
	chmod 755 "$copy"
	tl_log "server user $TL_SERVER_USER cannot read $TL_REPO; running from a copy in $copy"
	cp -a "$TL_REPO" "$copy/repo"
	[ -d "$TL_HYMENOPTERA" ] && mkdir -p "$copy/shared/data" && cp -a "$TL_HYMENOPTERA" "$copy/shared/data/"
	chmod -R a+rX "$copy"
	TL_RELOCATED=1 TL_HYMENOPTERA="$copy/shared/data/hymenoptera_data" TL_REPO= "$copy/repo/scripts/test.sh" "$@"
	status=$?
	rm -rf "$copy"
	exit $status
fi

passed=0
failed=0
failures=()
suite() {			# suite NAME CMD...: run one suite, count it
	local name=$1; shift
	tl_log "suite: $name"
	if "$@"; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
		failures+=("$name")
	fi
}

only=("$@")
if [ ${#only[@]} -eq 0 ]; then
	suite "unit" make -s unittest
fi
if [ ${#only[@]} -eq 0 ] && [ -z "${TL_SKIP_SANITIZE:-}" ]; then
	suite "unit (ASan+UBSan)" make -s unittest SANITIZE=1
fi

if ! tl_build_install; then
	echo "build failed"; echo "suites: $passed passed, $((failed + 1)) failed"; exit 1
fi
# The layering rules of docs/architecture.md, on the objects just built.
[ ${#only[@]} -eq 0 ] && suite "layering" scripts/check-layering.sh

CLUSTER=$TL_REPO/build/test-cluster
trap 'tl_cluster_stop "$CLUSTER"' EXIT
tl_cluster_start "$CLUSTER" || { echo "suites: $passed passed, $((failed + 1)) failed"; exit 1; }
export TL_CLUSTER=$CLUSTER

# The ingestion tests import this small tree server-side; they find it
# through the environment, so no machine's path appears in expected output.
export TL_TEST_IMAGES=$TL_REPO/build/test-data/images
tl_image_subset "$TL_TEST_IMAGES" || tl_log "could not prepare $TL_TEST_IMAGES; ingestion tests will fail"
# The weights tests read checkpoint fixtures server-side from a copy the server user can read.
export TL_TEST_CHECKPOINTS=$TL_REPO/build/test-data/checkpoints
rm -rf "$TL_TEST_CHECKPOINTS" && mkdir -p "$TL_TEST_CHECKPOINTS" &&
	cp -r test/fixtures/checkpoint/. "$TL_TEST_CHECKPOINTS" && chmod -R a+rX "$TL_REPO/build/test-data" ||
	tl_log "could not prepare $TL_TEST_CHECKPOINTS; weights tests will fail"
# The prediction tests read model and image fixtures server-side, likewise.
export TL_TEST_FIXTURES=$TL_REPO/build/test-data/fixtures
rm -rf "$TL_TEST_FIXTURES" && mkdir -p "$TL_TEST_FIXTURES" &&
	cp -r test/fixtures/predict test/fixtures/image "$TL_TEST_FIXTURES" && chmod -R a+rX "$TL_REPO/build/test-data" ||
	tl_log "could not prepare $TL_TEST_FIXTURES; prediction tests will fail"

if [ ${#only[@]} -gt 0 ]; then
	for t in "${only[@]}"; do
		case $t in
			*.sql) suite "$t" bash -c 'dropdb --if-exists transfer_tap && createdb transfer_tap &&
				psql -X -q -d transfer_tap -c "CREATE EXTENSION pgtap; CREATE EXTENSION transfer;" &&
				pg_prove -d transfer_tap "$1"' _ "$t" ;;
			*) suite "$t" prove -f --exec bash "$t" ;;
		esac
	done
	echo "suites: $passed passed, $failed failed"
	[ $failed -eq 0 ]
	exit
fi

regress() {
	rm -rf results regression.diffs regression.out
	if make -s installcheck PG_CONFIG="$PG_CONFIG"; then
		return 0
	fi
	[ -f regression.diffs ] && cat regression.diffs
	return 1
}
suite "pg_regress" regress

pgtap() {
	local db=transfer_tap
	dropdb --if-exists "$db" && createdb "$db" || return 1
	psql -X -q -d "$db" -c 'CREATE EXTENSION pgtap; CREATE EXTENSION transfer;' || return 1
	pg_prove -d "$db" --ext .sql -r test/pgtap
}
[ -n "$(ls test/pgtap/*.sql 2>/dev/null)" ] && suite "pgTAP" pgtap

# Scripted tests (dump/restore, crashes, replicas, oracles): executables in
# test/t that print TAP, run with the cluster's environment.
[ -n "$(ls test/t/*.sh 2>/dev/null)" ] && suite "scripted" prove -f --exec bash --ext .sh test/t/

echo
if [ $failed -gt 0 ]; then
	echo "failed suites: ${failures[*]}"
	[ -f "$CLUSTER/server.log" ] && tail -n 30 "$CLUSTER/server.log"
fi
echo "suites: $passed passed, $failed failed"
[ $failed -eq 0 ]
