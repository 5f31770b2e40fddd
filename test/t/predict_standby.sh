#!/usr/bin/env bash
# Prediction on a hot standby: a primary and a streaming-replication standby
# on this machine (under build/), models imported and deployed on the
# primary, tl_predict on the standby; a session on the standby that has the
# old model cached follows a new deployment.  Prediction must not write
# (no xid, no temporary objects), or the standby would refuse it.
set -u
. "$(dirname "$0")/../lib/predict_setup.sh"
. "$TL_REPO/scripts/pgcluster.sh"

base=$TL_REPO/build/standby-test
primary=$base/primary
standby=$base/standby
cleanup() {
	tl_cluster_stop "$standby"
	tl_cluster_stop "$primary"
}
trap cleanup EXIT

echo "1..7"
# Our own primary: the suite's cluster keeps its PG* settings for later tests.
saved_env=$(declare -p PGHOST PGPORT PGUSER PGDATABASE 2>/dev/null)
tl_cluster_start "$primary" "wal_level = replica" "max_wal_senders = 4" 2>/dev/null \
	|| { echo "Bail out! primary did not start"; exit 1; }
P=(-h "$PGHOST" -p "$PGPORT")
predict_setup_db transfer_standby
tl_standby_start "$primary" "$standby" 2>/dev/null || { echo "Bail out! standby did not start"; exit 1; }
S=(-h "$standby" -p "$(tl_port_for "$standby")" -d transfer_standby)
eval "$saved_env"

# Wait until the standby has replayed everything the primary has written.
catch_up() {
	local lsn i
	lsn=$(psql -X -qAt "${P[@]}" -d postgres -c "SELECT pg_current_wal_lsn()")
	for i in $(seq 1 300); do
		[ "$(psql -X -qAt "${S[@]}" -c "SELECT pg_last_wal_replay_lsn() >= '$lsn'::pg_lsn" 2>/dev/null)" = t ] && return 0
		sleep 0.1
	done
	return 1
}
pq() { psql -X -v ON_ERROR_STOP=1 -qAt "${P[@]}" -d transfer_standby -c "$1"; }
sq() { psql -X -v ON_ERROR_STOP=1 -qAt "${S[@]}" -c "$1"; }

pq "SELECT FROM tl_deploy('predict_a')"
catch_up
is "$(sq "SELECT pg_is_in_recovery()")" t "the standby is in recovery (read-only)"

digest() {
	echo "SELECT md5(string_agg(id || ':' || tl_predict(img$1), ',' ORDER BY id)) FROM tl_images WHERE dataset = 'psynth'"
}
primary_a=$(pq "$(digest ", 'predict_a'")")
primary_b=$(pq "$(digest ", 'predict_b'")")
standby_a=$(sq "$(digest ", 'predict_a'")")
[ -n "$primary_a" ] && [ "$standby_a" = "$primary_a" ]
ok $? "tl_predict(img, model) on the standby equals the primary's predictions"
proba="SELECT md5(string_agg(tl_predict_proba(img)::text, ',' ORDER BY id)) FROM tl_images"
primary_proba=$(pq "$proba")
standby_proba=$(sq "$proba")
[ -n "$primary_proba" ] && [ "$standby_proba" = "$primary_proba" ]
ok $? "tl_predict_proba(img) with the deployed model is the same on both"

# A long standby session: deploy and replace on the primary in between (\!).
out=$(psql -X -v ON_ERROR_STOP=1 -qAt "${S[@]}" <<SQL 2>&1
SET max_parallel_workers_per_gather = 0;
SELECT 'before', ($(digest "")) AS d;
\! psql -X -q ${P[*]} -d transfer_standby -c "SELECT FROM tl_deploy('predict_b')" >/dev/null
-- wait (new snapshot per statement) until the standby has replayed it
DO \$\$ BEGIN
	FOR i IN 1..300 LOOP
		EXIT WHEN (SELECT model_name FROM tl_deployments ORDER BY id DESC LIMIT 1) = 'predict_b';
		PERFORM pg_sleep(0.1);
	END LOOP;
END \$\$;
SELECT 'after_deploy', ($(digest "")) AS d;
SELECT 'evaluate', (tl_evaluate('predict_b', 'psynth') ->> 'images');
SQL
)
[ "${TAP_VERBOSE:-}" ] && echo "$out" | sed 's/^/# /'
val() { awk -F'|' -v k="$1" '$1 == k {print $2}' <<<"$out"; }
[ -n "$primary_a" ] && [ "$(val before)" = "$primary_a" ]
ok $? "a standby session predicts with the deployed model"
[ -n "$primary_b" ] && [ "$primary_b" != "$primary_a" ] && [ "$(val after_deploy)" = "$primary_b" ]
ok $? "after a deployment on the primary, its next query uses the new model"
images=$(pq "SELECT count(*) FROM tl_images WHERE dataset = 'psynth'")
is "$(val evaluate)" "$images" "tl_evaluate runs on the standby"
! grep -q "terminated by signal" "$standby/server.log" "$primary/server.log"
ok $? "no server process crashed"

tap_exit
