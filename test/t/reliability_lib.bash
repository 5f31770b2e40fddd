# reliability_lib.bash - a crash watch (and tap.bash's TAP helpers) for the
# reliability tests in test/t (hostile_*.sh, dump_all.sh).  Source it after
# scripts/pgcluster.sh; prove runs only *.sh, so this file is not a test.
#
#   ok STATUS DESCRIPTION   a TAP line from an exit status
#   is GOT EXPECTED DESC    a TAP line comparing two strings, with a diagnostic
#   q ARGS...               psql -At against the cluster, stopping on errors
#   crash_watch_start       remember the postmaster start time and the server
#                           log's size, and open a sentinel session
#   crash_watch_check WHAT  three TAP lines: the postmaster did not restart,
#                           the sentinel backend survived (a backend crash
#                           makes the postmaster end every session, while its
#                           start time stays the same), and the server log
#                           written since the start has no crash report
#   crash_log_lines LOG OFFSET  the crash reports LOG has after byte OFFSET
#                           (at most 5 lines; none for a clean run)

. "$(dirname "${BASH_SOURCE[0]}")/tap.bash"
q() { tl_psql -At "$@"; }

crash_watch_start() {
	watch_start_time=$(q -c 'SELECT pg_postmaster_start_time()')
	watch_log=${TL_CLUSTER:?TL_CLUSTER must name the test cluster}/server.log
	watch_log_size=$(stat -c %s "$watch_log" 2>/dev/null || echo 0)
	watch_app=tl_crash_watch_$$
	PGAPPNAME=$watch_app psql -X -q -c 'SELECT pg_sleep(3600)' >/dev/null 2>&1 &
	watch_sentinel_job=$!
	trap crash_watch_stop EXIT
	local i
	for i in $(seq 50); do
		watch_sentinel_pid=$(q -c "SELECT pid FROM pg_stat_activity WHERE application_name = '$watch_app'")
		[ -n "$watch_sentinel_pid" ] && return 0
		sleep 0.1
	done
	echo "# the sentinel session did not start"
}

crash_watch_stop() {
	[ -n "${watch_sentinel_job:-}" ] || return 0
	q -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '$watch_app'" >/dev/null 2>&1
	kill "$watch_sentinel_job" 2>/dev/null
	wait "$watch_sentinel_job" 2>/dev/null
	watch_sentinel_job=
}

crash_watch_check() {
	local what=$1 crashes
	is "$(q -c 'SELECT pg_postmaster_start_time()' 2>&1)" "$watch_start_time" \
		"$what: the postmaster start time is unchanged"
	is "$(q -c "SELECT pid FROM pg_stat_activity WHERE application_name = '$watch_app'" 2>&1)" \
		"${watch_sentinel_pid:-none}" "$what: a session open all along is still there (no backend crashed)"
	crashes=$(crash_log_lines "$watch_log" "$watch_log_size")
	is "$crashes" "" "$what: the server log has no crash report"
	crash_watch_stop
}

crash_log_lines() {
	tail -c +$(($2 + 1)) "$1" |
		grep -E 'terminated by signal|server process .* was terminated|terminating any other active server processes|all server processes terminated|was terminated by|PANIC:|TRAP:' |
		head -n 5
}
