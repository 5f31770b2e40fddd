#!/usr/bin/env bash
# The upgrade a user does, from transfer 0.1.0 as shipped (commit 64dd36a,
# built from git history) to this checkout:
#   1. 0.1.0 built and installed into a private installation of its own, a
#      cluster on it, CREATE EXTENSION transfer VERSION '0.1.0'; images and
#      weights imported, one epoch trained, a model deployed; predictions,
#      exports and every extension table recorded;
#   2. the server stopped, this checkout's build installed over it (new .so,
#      control file and scripts), the server started: the 0.1.0 objects work
#      with the new library; then ALTER EXTENSION transfer UPDATE;
#   3. tl_version() is 0.2.0; every row of every extension table of 0.1.0 is
#      intact (count and hash over 0.1.0's columns, so columns added since
#      don't hide a change); predictions and exports are identical;
#   4. the extension's objects equal a fresh CREATE EXTENSION transfer,
#      compared generically from the catalog (every member object, function
#      definitions, columns in order, defaults, constraints, indexes,
#      triggers, policies, row-level security, comments, grants, the
#      pg_extension_config_dump marks): any change to src/sql/NN_*.sql not
#      mirrored in the upgrade script fails here, with the difference shown.
# Needs the git history (CI uses a full clone); a shallow clone fails with a
# TAP line saying so.  Prints TAP; run by scripts/test.sh with the throwaway
# cluster's environment (its cluster is not used: this test runs its own).
set -uo pipefail
cd "$(dirname "$0")/../.."
. scripts/pgcluster.sh
. test/t/tap.bash

OLD=64dd36a			# transfer 0.1.0 as shipped
work=$TL_REPO/build/test-data/upgrade
images=${TL_TEST_IMAGES:?TL_TEST_IMAGES names the ingestion test tree}
db=tl_upgrade
fresh=tl_upgrade_fresh

echo "1..17"

if ! git -C "$TL_REPO" cat-file -e "$OLD^{commit}" 2>/dev/null; then
	echo "not ok 1 - commit $OLD (transfer 0.1.0) is not in the git history: the upgrade test needs a full clone (git fetch --unshallow)"
	exit 1
fi
ok 0 "commit $OLD (transfer 0.1.0) is in the git history"

# The server installation this checkout builds against, without the private
# copy's prefix (PG_CONFIG may point into build/tmp_install).
pgc=${PG_CONFIG:-$TL_PG_CONFIG}
bindir=$("$pgc" --bindir)
bindir=${bindir#"$TL_TMP_INSTALL"}
sys_pgc=$bindir/pg_config
[ -x "$sys_pgc" ] || sys_pgc=$TL_PG_CONFIG

# ---- 0.1.0, built from history into its own installation --------------------
old_src=$TL_REPO/build/upgrade-v010
inst=$work/install
mkdir -p "$work"
if [ "$(cat "$old_src/.built-from" 2>/dev/null)" != "$(git -C "$TL_REPO" rev-parse "$OLD")" ]; then
	rm -rf "$old_src" && mkdir -p "$old_src" &&
		git -C "$TL_REPO" archive "$OLD" | tar -x -C "$old_src" &&
		make -C "$old_src" -s -j"$(nproc)" PG_CONFIG="$sys_pgc" >"$work/build-v010.log" 2>&1 &&
		git -C "$TL_REPO" rev-parse "$OLD" >"$old_src/.built-from"
fi
rm -rf "$inst"
(
	TL_REPO=$old_src TL_TMP_INSTALL=$inst TL_PG_CONFIG=$sys_pgc
	tl_build_install >>"$work/build-v010.log" 2>&1
) && grep -q "default_version = '0.1.0'" "$inst$("$sys_pgc" --sharedir)/extension/transfer.control"
built=$?
ok $built "transfer 0.1.0 built from $OLD and installed into $inst"
[ $built = 0 ] || tail -n 20 "$work/build-v010.log" | sed 's/^/# /'

cluster=$work/cluster
trap 'tl_cluster_stop "$cluster"' EXIT
start() {
	TL_TMP_INSTALL=$inst PATH="$inst$bindir:$PATH" tl_cluster_start "$cluster" >/dev/null 2>&1
}
export PATH="$inst$bindir:$PATH"
start
q() { tl_psql -X -At -d "$db" "$@"; }
cp test/fixtures/checkpoint/tiny.pth "$work/" && chmod -R a+rX "$work/tiny.pth"
createdb $db && q -c "CREATE EXTENSION transfer VERSION '0.1.0'" &&
	q >/dev/null 2>"$work/setup.err" <<SQL
SELECT tl_import_folder('upg', '$images');
SELECT tl_import_weights('upg-imported', pg_read_binary_file('$work/tiny.pth'), ARRAY['ants', 'bees', 'wasps']);
SELECT tl_train('finetune', 'upg', from_scratch => true, base_width => 8, image_size => 64,
	epochs => 1, seed => 1, model_name => 'upg-trained', wait => true);
SELECT tl_deploy('upg-imported');
SELECT tl_deploy('upg-trained');
SQL
ok $? "0.1.0: images imported, weights imported, one epoch trained, a model deployed"
sed 's/^/# /' "$work/setup.err" | grep -v NOTICE | head -n 20
is "$(q -c "SELECT extversion FROM pg_extension WHERE extname = 'transfer'")|$(q -c 'SELECT tl_version()')" "0.1.0|0.1.0" \
	"the database runs transfer 0.1.0"
is "$(q -c "SELECT (SELECT count(*) FROM tl_images) > 0 AND (SELECT count(*) FROM tl_stored_models) = 2
	AND (SELECT count(*) FROM tl_runs WHERE status = 'succeeded') = 1 AND (SELECT count(*) FROM tl_run_epochs) = 2
	AND (SELECT count(*) FROM tl_deployments) = 2")" t "there are images, 2 models, a succeeded run with its epoch (train and val rows), 2 deployments"

# Every extension table of 0.1.0 with its columns then: the hashes below use
# only these columns, so the comparison survives columns added by 0.2.0.
ext_rel="SELECT c.oid FROM pg_class c
	JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
	JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'transfer'"
old_tables=$(q -c "SELECT c.oid::regclass::text || ' ' || string_agg(quote_ident(a.attname), ',' ORDER BY a.attnum)
	FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
	WHERE c.oid IN ($ext_rel) AND c.relkind IN ('r', 'p') GROUP BY c.oid ORDER BY 1")
data_state() {
	local t cols
	while read -r t cols; do
		echo "$t $(q -c "SELECT count(*) || ' ' || coalesce(md5(string_agg(h, '' ORDER BY h)), '-')
			FROM (SELECT md5(ROW($cols)::text) AS h FROM $t) r")"
	done <<<"$old_tables"
	q -c "SELECT last_value FROM tl_images_id_seq" -c "SELECT last_value FROM tl_runs_id_seq"
}
# Labels and exports must be identical; probabilities and the evaluation's
# numbers are compared to 4 decimals, because 0.2.0 runs inference with a
# fixed 2-part GEMM split at every thread count (docs/prediction.md), which
# moves the last float32 bit of a 1-thread 0.1.0 result.
results() {
	q -c "CREATE OR REPLACE FUNCTION pg_temp.r6(j jsonb) RETURNS jsonb LANGUAGE sql AS \$\$
		SELECT CASE jsonb_typeof(j)
			WHEN 'number' THEN to_jsonb(round(j::text::numeric, 4))
			WHEN 'object' THEN (SELECT jsonb_object_agg(k, pg_temp.r6(v)) FROM jsonb_each(j) AS e(k, v))
			WHEN 'array' THEN (SELECT jsonb_agg(pg_temp.r6(v) ORDER BY o) FROM jsonb_array_elements(j) WITH ORDINALITY AS a(v, o))
			ELSE j END \$\$;
		SELECT id, tl_predict(img), tl_predict(img, 'upg-imported'), pg_temp.r6(tl_predict_proba(img, 'upg-trained')),
		pg_temp.r6(tl_predict_proba(img, 'upg-imported')) FROM tl_images ORDER BY id;
		SELECT pg_temp.r6(tl_evaluate('upg-trained', 'upg', 'val'))"
	q -c "SELECT name, md5(tl_export(name)), md5(tl_export(name, 'pth')) FROM tl_stored_models ORDER BY id"
}
before_data=$(data_state)
before_results=$(results 2>&1)
echo "$before_data" | grep -q ' 0 -$' && echo "$before_data" | grep ' 0 -$' | sed 's/^/# empty before the upgrade (count only): /'
is "$(echo "$before_results" | grep -cE '^[0-9]+\|[a-z]+\|[a-z]+\|\{')" "$(q -c 'SELECT count(*) FROM tl_images')" \
	"0.1.0 predicts every image with the deployed and the named models"

# ---- the upgrade: the new build installed over the old one -------------------
tl_cluster_stop "$cluster"
make -C "$TL_REPO" -s install PG_CONFIG="$sys_pgc" DESTDIR="$inst" >"$work/install-new.log" 2>&1 &&
	chmod -R a+rX "$inst" &&
	TL_TMP_INSTALL=$inst PATH="$inst$bindir:$PATH" tl_as_server pg_ctl -D "$cluster/data" -l "$cluster/server.log" -w -t 60 start >/dev/null
ok $? "this checkout's build installed over 0.1.0 (new library and scripts), server restarted"

is "$(results 2>&1)" "$before_results" "the 0.1.0 objects with the new library: predictions, evaluation and exports unchanged"
q -c 'ALTER EXTENSION transfer UPDATE' >/dev/null 2>"$work/update.err"
ok $? "ALTER EXTENSION transfer UPDATE"
sed 's/^/# /' "$work/update.err" | head -n 20
is "$(q -c "SELECT extversion FROM pg_extension WHERE extname = 'transfer'")|$(q -c 'SELECT tl_version()')" "0.2.0|0.2.0" \
	"the database runs transfer 0.2.0: tl_version() = '0.2.0'"
is "$(data_state)" "$before_data" "every row of every 0.1.0 table (images, models, tensors, runs, epochs, deployments, ...) is intact, and the id sequences"
is "$(results 2>&1)" "$before_results" "predictions, evaluation and model exports are identical before and after the upgrade"

# ---- the objects equal a fresh install ---------------------------------------
# One line per property of every extension member, without oids.
schema_of() {		# schema_of DB
	tl_psql -X -At -d "$1" <<'SQL'
WITH members AS (
	SELECT d.classid, d.objid, d.objsubid FROM pg_depend d
	JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'transfer'
	WHERE d.deptype = 'e' AND d.refclassid = 'pg_extension'::regclass
), rels AS (
	SELECT c.* FROM pg_class c JOIN members m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid
), funcs AS (
	SELECT p.* FROM pg_proc p JOIN members m ON m.classid = 'pg_proc'::regclass AND m.objid = p.oid
)
SELECT 'member ' || pg_describe_object(classid, objid, objsubid) FROM members
UNION ALL
SELECT 'function ' || oid::regprocedure || E'\n' || CASE WHEN prokind = 'a' THEN 'aggregate' ELSE pg_get_functiondef(oid) END
	|| E'\n  acl ' || coalesce(proacl::text, '-') || ' cost ' || procost || ' rows ' || prorows
	|| E'\n  comment ' || coalesce(obj_description(oid, 'pg_proc'), '-') FROM funcs
UNION ALL
SELECT 'relation ' || oid::regclass || ' kind ' || relkind::text || ' rls ' || relrowsecurity || '/' || relforcerowsecurity
	|| ' options ' || coalesce(reloptions::text, '-') || ' acl ' || coalesce(relacl::text, '-')
	|| ' persistence ' || relpersistence::text || ' comment ' || coalesce(obj_description(oid, 'pg_class'), '-') FROM rels
UNION ALL
SELECT 'column ' || c.oid::regclass || ' #' || row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum) || ' ' || a.attname
	|| ' ' || format_type(a.atttypid, a.atttypmod) || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
	|| ' default ' || coalesce(pg_get_expr(ad.adbin, ad.adrelid), '-') || ' identity ' || a.attidentity::text
	|| ' generated ' || a.attgenerated::text || ' collation ' || coalesce(co.collname::text, '-')
	|| ' acl ' || coalesce(a.attacl::text, '-') || ' comment ' || coalesce(col_description(c.oid, a.attnum), '-')
FROM rels c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_attrdef ad ON ad.adrelid = c.oid AND ad.adnum = a.attnum
LEFT JOIN pg_collation co ON co.oid = a.attcollation AND a.attcollation <> 0
UNION ALL
SELECT 'constraint ' || conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
	|| ' deferrable ' || condeferrable
FROM pg_constraint WHERE conrelid IN (SELECT oid FROM rels)
UNION ALL
SELECT 'index ' || pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid IN (SELECT oid FROM rels)
UNION ALL
SELECT 'trigger ' || pg_get_triggerdef(oid) || ' enabled ' || tgenabled::text FROM pg_trigger
WHERE tgrelid IN (SELECT oid FROM rels) AND NOT tgisinternal
UNION ALL
SELECT 'policy ' || polrelid::regclass || ' ' || polname || ' cmd ' || polcmd::text || ' permissive ' || polpermissive
	|| ' roles ' || (SELECT string_agg(CASE WHEN r = 0 THEN 'public' ELSE r::regrole::text END, ',' ORDER BY 1) FROM unnest(polroles) r)
	|| ' using ' || coalesce(pg_get_expr(polqual, polrelid), '-') || ' check ' || coalesce(pg_get_expr(polwithcheck, polrelid), '-')
FROM pg_policy WHERE polrelid IN (SELECT oid FROM rels)
UNION ALL
SELECT 'view ' || oid::regclass || E'\n' || pg_get_viewdef(oid) FROM rels WHERE relkind IN ('v', 'm')
UNION ALL
SELECT 'sequence ' || seqrelid::regclass || ' ' || format_type(seqtypid, NULL) || ' start ' || seqstart || ' inc ' || seqincrement
	|| ' min ' || seqmin || ' max ' || seqmax || ' cache ' || seqcache || ' cycle ' || seqcycle
FROM pg_sequence WHERE seqrelid IN (SELECT oid FROM rels)
UNION ALL
SELECT 'owned ' || d.objid::regclass || ' by ' || d.refobjid::regclass || '.' || a.attname FROM pg_depend d
JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
WHERE d.classid = 'pg_class'::regclass AND d.objid IN (SELECT oid FROM rels WHERE relkind = 'S') AND d.deptype IN ('a', 'i')
UNION ALL
SELECT 'type ' || t.oid::regtype || ' ' || t.typtype::text FROM pg_type t JOIN members m ON m.classid = 'pg_type'::regclass AND m.objid = t.oid
UNION ALL
SELECT 'config_dump ' || c::regclass || ' ' || coalesce(w, '-') FROM pg_extension e,
	unnest(e.extconfig, e.extcondition) AS x(c, w) WHERE e.extname = 'transfer'
UNION ALL
SELECT 'extension schema ' || extnamespace::regnamespace || ' relocatable ' || extrelocatable FROM pg_extension WHERE extname = 'transfer'
ORDER BY 1;
SQL
}
dropdb --if-exists $fresh 2>/dev/null
createdb $fresh && tl_psql -X -d $fresh -c 'CREATE EXTENSION transfer' >/dev/null
ok $? "a fresh database with CREATE EXTENSION transfer (0.2.0) beside it"
schema_of $db >"$work/schema.upgraded" 2>&1 && schema_of $fresh >"$work/schema.fresh" 2>&1
ok $? "described the extension's objects in both databases"
[ "$(grep -c '^function ' "$work/schema.fresh")" -ge 20 ] && [ "$(grep -c '^column ' "$work/schema.fresh")" -ge 40 ] &&
	grep -q '^policy ' "$work/schema.fresh" && grep -q '^config_dump ' "$work/schema.fresh"
ok $? "the description covers functions, columns, policies and dump marks (the comparison is not vacuous)"
diff -u "$work/schema.fresh" "$work/schema.upgraded" >"$work/schema.diff"
ok $? "the upgraded database's objects equal a fresh 0.2.0 install (functions, tables, columns in order, constraints, indexes, policies, comments, grants, dump marks)"
head -n 80 "$work/schema.diff" | sed 's/^/# /'

# ---- and the upgraded database keeps working --------------------------------
run=$(q -c "SELECT tl_train('finetune', 'upg', from_scratch => true, base_width => 8, image_size => 64,
	epochs => 1, seed => 1, model_name => 'upg-after', wait => true)" 2>/dev/null)
is "$run|$(q -c "SELECT tl_run_status(${run:-0})" 2>&1)" "$(( $(q -c 'SELECT min(id) FROM tl_runs') + 1 ))|succeeded" \
	"training after the upgrade gets the next run id and succeeds"

[ -n "${TL_KEEP:-}" ] && tap_exit
dropdb $db && dropdb $fresh
tl_cluster_stop "$cluster"
trap - EXIT
rm -rf "$work"
tap_exit
