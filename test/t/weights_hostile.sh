#!/usr/bin/env bash
# Hostile checkpoints against a running server: every file of
# test/fixtures/checkpoint/bad, then thousands of truncated and randomly
# corrupted variants of valid zip, legacy and safetensors files (made in SQL
# with a fixed seed), go through tl_import_weights.  Each must either be
# refused with an error or import; no backend may crash: the postmaster's
# start time is unchanged and the server log has no "terminated by signal".
# Prints TAP.
set -uo pipefail
cd "$(dirname "$0")/../.."
. scripts/pgcluster.sh
. test/t/tap.bash

db=tl_weights_hostile
q() { tl_psql -X -At -d $db "$@"; }
log=${TL_CLUSTER:?TL_CLUSTER is not set}/server.log
work=$TL_REPO/build/test-data/weights-hostile
rm -rf "$work" && mkdir -p "$work" && cp -r test/fixtures/checkpoint/. "$work" && chmod -R a+rX "$work"

echo "1..6"
dropdb --if-exists $db 2>/dev/null
createdb $db && q -c 'CREATE EXTENSION transfer' >/dev/null
ok $? "created $db"
started=$(q -c "SELECT pg_postmaster_start_time()")
signals_before=$(grep -c "terminated by signal" "$log" 2>/dev/null)

q >/dev/null <<SQL
CREATE TABLE outcome (source text, variant text, result text);
CREATE FUNCTION try_import(source text, variant text, data bytea) RETURNS void
LANGUAGE plpgsql AS \$\$
BEGIN
	BEGIN
		PERFORM tl_import_weights('v', data);
		DELETE FROM tl_stored_models WHERE name = 'v';
		INSERT INTO outcome VALUES (source, variant, 'imported');
	EXCEPTION WHEN OTHERS THEN
		INSERT INTO outcome VALUES (source, variant, SQLSTATE);
	END;
END \$\$;
SQL

q -c "SELECT try_import('bad', f, pg_read_binary_file('$work/bad/' || f)) FROM pg_ls_dir('$work/bad') f" >/dev/null
ok $? "imported every file of the bad corpus"
bad=$(q -c "SELECT count(*) FILTER (WHERE result = 'imported') || '/' || count(*) FROM outcome WHERE source = 'bad'")
[ "${bad%%/*}" = 0 ] && [ "${bad#*/}" -ge 40 ]
ok $? "all $(echo "${bad#*/}") bad files refused"

# Truncations at 300 offsets and 700 random byte overwrites of each valid file.
for f in tiny.pth tiny_legacy.pth tiny.safetensors views.pth views_legacy.pth views_deflate.pth; do
	q >/dev/null <<SQL || echo "# variants of $f: psql failed"
SELECT setseed(0.5);
CREATE TEMP TABLE src AS SELECT pg_read_binary_file('$work/$f') AS d;
SELECT try_import('$f', 'cut ' || k, substr(d, 1, k))
  FROM src, LATERAL (SELECT (random() * (length(d) - 1))::int AS k FROM generate_series(1, 300)) c;
SELECT try_import('$f', 'byte ' || p || '=' || b, set_byte(d, p, b))
  FROM src, LATERAL (SELECT (random() * (length(d) - 1))::int AS p, (random() * 255)::int AS b
                     FROM generate_series(1, 700)) c;
SQL
done
summary=$(q -c "SELECT source || ': ' || count(*) || ' variants, ' || count(*) FILTER (WHERE result = 'imported')
	|| ' imported, ' || count(*) FILTER (WHERE result <> 'imported') || ' refused (' ||
	string_agg(DISTINCT result, ' ' ORDER BY result) FILTER (WHERE result <> 'imported') || ')'
	FROM outcome WHERE source <> 'bad' GROUP BY source ORDER BY source")
echo "$summary" | sed 's/^/# /'
[ "$(q -c "SELECT count(*) FROM outcome WHERE source <> 'bad'")" = 6000 ]
ok $? "6000 damaged variants each gave a result"
[ "$(q -c "SELECT count(*) FROM outcome WHERE result NOT IN ('imported', '22P03', '54000', '0A000', '42501', '42804')")" = 0 ]
ok $? "every refusal has a checkpoint SQLSTATE (22P03, 54000, 0A000, 42501 or 42804)"

[ "$(q -c "SELECT pg_postmaster_start_time()")" = "$started" ] &&
	[ "$(grep -c "terminated by signal" "$log" 2>/dev/null)" = "$signals_before" ]
ok $? "no backend crashed: postmaster start time unchanged, no \"terminated by signal\" in the log"
dropdb $db
rm -rf "$work"
