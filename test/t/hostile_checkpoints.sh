#!/usr/bin/env bash
# Hostile checkpoints through SQL, each input in its own statement, while a
# crash watch runs (test/t/reliability_lib.bash):
#   * every file of the weights corpus (test/fixtures/checkpoint/bad: bad CRC
#     and sizes, truncated zips, forbidden pickle globals, deep nesting, huge
#     declared tensors, overlapping or out-of-range safetensors offsets, a
#     giant header length...) through tl_import_weights and
#     tl_import_weights_file: the SQLSTATE its name announces;
#   * the valid tiny checkpoints (torch zip, legacy, safetensors) truncated at
#     many lengths and with bits flipped in their structure, mutated in SQL
#     (substr, set_byte): a clear error from the allowed classes, or an import;
# then no backend crashed, nothing was half-written, and the models that did
# import can be exported; and stored models tampered with in their tables
# (truncated or reshaped tensors, a missing or renamed key, NaN weights, a
# width, size or class count that doesn't fit) are refused by tl_predict,
# tl_predict_proba and tl_export with a clear error, or work.  Exact messages are checked in sql/weights.sql.
# Prints TAP.
set -uo pipefail
cd "$(dirname "$0")/../.."
. scripts/pgcluster.sh
. test/t/reliability_lib.bash

echo "1..16"

db=tl_hostile_ckpt
work=$TL_REPO/build/test-data/hostile-checkpoints
rm -rf "$work" && mkdir -p "$work" && cp -r test/fixtures/checkpoint/bad test/fixtures/checkpoint/tiny.pth \
	test/fixtures/checkpoint/tiny_legacy.pth test/fixtures/checkpoint/tiny.safetensors "$work"/ && chmod -R a+rX "$work"
dropdb --if-exists $db 2>/dev/null
createdb $db && q -d $db -c 'CREATE EXTENSION transfer' && q -d $db <<'SQL'
-- One input, one statement: 'ok <model id>' or '<SQLSTATE> <message>'.
CREATE FUNCTION try_import(label text, data bytea) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
	RETURN 'ok ' || tl_import_weights(label, data);
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ' ' || SQLERRM;
END $$;
CREATE FUNCTION try_import_file(label text, path text) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
	RETURN 'ok ' || tl_import_weights_file(label, path);
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ' ' || SQLERRM;
END $$;
-- bytes with one bit flipped
CREATE FUNCTION flip(data bytea, pos integer, b integer) RETURNS bytea
LANGUAGE sql IMMUTABLE AS 'SELECT set_byte(data, pos, get_byte(data, pos) # (1 << b))';
SQL
[ $? = 0 ] && reference=$(q -d $db -c "SELECT tl_import_weights('reference', pg_read_binary_file('$work/tiny.pth'))")
ok $? "a database with the extension, the statement wrappers and an intact reference model"

crash_watch_start

# --- the corpus: the SQLSTATE each file's name announces ----------------------
expected_state() {
	case $1 in
	corrupt-*) echo 22P03 ;; forbidden-*) echo 42501 ;; limit-*) echo 54000 ;; unsupported-*) echo 0A000 ;;
	*) echo "?" ;;
	esac
}
script=$work/corpus.sql
: >"$script"
files=$(cd "$work/bad" && ls | LC_ALL=C sort)
for f in $files; do
	echo "SELECT 'bytea $f', try_import('$f', pg_read_binary_file('$work/bad/$f'));" >>"$script"
	echo "SELECT 'file $f', try_import_file('$f', '$work/bad/$f');" >>"$script"
done
out=$(psql -X -At -F ' ' -d $db -f "$script" 2>&1)
is "$(echo "$out" | grep -cE '^(bytea|file) ')|$(echo "$out" | grep -cvE '^(bytea|file) ')" "$(( 2 * $(echo "$files" | wc -l) ))|0" "every corpus input answered, one statement each ($(echo "$files" | wc -l) files, two entry points)"
[ "$(echo "$files" | wc -l)" -ge 30 ]
ok $? "the corpus has at least 30 files"
wrong=$(echo "$out" | while read -r how f state rest; do
	[ "$state" = "$(expected_state "$f")" ] || echo "$how $f: $state $rest"
done)
is "$wrong" "" "every corpus file gives the SQLSTATE its name announces, through bytea and through a server file"

# --- mutations of valid checkpoints --------------------------------------------
# Truncations must fail; bit flips in the structure (headers, pickle, zip
# central directory, safetensors JSON) may fail in any of the allowed classes
# or import (a flip in float data or padding is harmless).
allowed='^(ok|22P03|0A000|54000|42501|22023|42804|22021|2200N) '
RANDOM=9
script=$work/mutations.sql
: >"$script"
for f in tiny.pth tiny_legacy.pth tiny.safetensors; do
	size=$(stat -c %s "$work/$f")
	for len in 1 4 8 30 64 100 300 1000 $((size / 4)) $((size / 2)) $((size * 3 / 4)) $((size - 22)) $((size - 1)); do
		echo "SELECT 'trunc $f:$len', try_import('$f:$len', substr(pg_read_binary_file('$work/$f'), 1, $len));" >>"$script"
	done
	for k in $(seq 12); do
		pos=$((RANDOM % 700)); bit=$((RANDOM % 8))
		echo "SELECT 'flip $f:$pos.$bit', try_import('$f:$pos.$bit', flip(pg_read_binary_file('$work/$f'), $pos, $bit));" >>"$script"
	done
	for k in $(seq 6); do
		pos=$((size - 1 - RANDOM % 400)); bit=$((RANDOM % 8))
		echo "SELECT 'flip $f:$pos.$bit', try_import('$f:$pos.$bit', flip(pg_read_binary_file('$work/$f'), $pos, $bit));" >>"$script"
	done
done
n_mutations=$(wc -l <"$script")
out=$(psql -X -At -F ' ' -d $db -f "$script" 2>&1)
is "$(echo "$out" | grep -cE '^(trunc|flip) ')|$(echo "$out" | grep -cvE '^(trunc|flip) ')" "$n_mutations|0" "every mutated checkpoint answered, one statement each ($n_mutations inputs)"
is "$(echo "$out" | grep '^trunc ' | grep -v ' \(22P03\|0A000\|54000\) ')" "" \
	"every truncated checkpoint is refused as corrupt, unsupported or over a limit"
is "$(echo "$out" | cut -d' ' -f3- | grep -Ev "$allowed")" "" \
	"every bit-flipped checkpoint imports or is refused in an expected class (never XX000, never out of memory)"
imported=$(echo "$out" | grep -c ' ok ')
refused=$(echo "$out" | grep -vc ' ok ')
[ "$refused" -ge 40 ]
ok $? "the mutations reach the parsers' error paths ($refused refused, $imported imported)"

# --- nothing half-written --------------------------------------------------------
is "$(q -d $db -c "SELECT count(*) FROM tl_stored_models WHERE id <> $reference")" "$imported" \
	"exactly the imports that succeeded stored a model"
tensors="SELECT count(*) FROM tl_model_tensors t WHERE t.model_id"
is "$(q -d $db -c "SELECT count(*) FROM tl_stored_models m WHERE ($tensors = m.id) <> ($tensors = $reference)")" \
	"0" "each stored model has every tensor, as the intact one ($(q -d $db -c "$tensors = $reference"))"
is "$(q -d $db -c "SELECT count(*) FROM tl_stored_models WHERE length(tl_export(name)) > 0 AND length(tl_export(name, 'pth')) > 0")" \
	"$(( imported + 1 ))" "every imported model exports in both formats"

# --- tampered stored models ------------------------------------------------------
# A role with UPDATE on the model tables can change a stored model under the
# functions that read it: they check what they load.
tamper_cases=(
	"UPDATE tl_model_tensors SET data = substr(data, 1, 5) WHERE model_id = MODEL_ID AND key = 'conv1.weight'"
	"UPDATE tl_model_tensors SET shape = '{2147483647,2147483647}' WHERE model_id = MODEL_ID AND key = 'fc.weight'"
	"UPDATE tl_model_tensors SET shape = '{-1,4}' WHERE model_id = MODEL_ID AND key = 'fc.weight'"
	"UPDATE tl_model_tensors SET shape = '{}' WHERE model_id = MODEL_ID AND key = 'fc.bias'"
	"UPDATE tl_model_tensors SET shape = '{1,1,1,1,1,1,1,1,1}' WHERE model_id = MODEL_ID AND key = 'conv1.weight'"
	"DELETE FROM tl_model_tensors WHERE model_id = MODEL_ID AND key = 'bn1.running_var'"
	"UPDATE tl_model_tensors SET key = 'evil' WHERE model_id = MODEL_ID AND key = 'bn1.bias'"
	"UPDATE tl_model_tensors SET data = decode(repeat('0000c07f', length(data) / 4), 'hex') WHERE model_id = MODEL_ID"
	"UPDATE tl_stored_models SET base_width = 100000 WHERE id = MODEL_ID"
	"UPDATE tl_stored_models SET image_size = 100000 WHERE id = MODEL_ID"
	"UPDATE tl_stored_models SET num_classes = 1, classes = '{a}' WHERE id = MODEL_ID"
	"UPDATE tl_stored_models SET num_classes = 4, classes = '{a,b,c,d}' WHERE id = MODEL_ID"
)
q -d $db -c "CREATE FUNCTION try(query text) RETURNS text
	LANGUAGE plpgsql SET search_path = pg_catalog, public AS \$\$
	DECLARE
		result text;
	BEGIN
		EXECUTE query INTO result;
		RETURN 'ok';
	EXCEPTION WHEN OTHERS THEN
		RETURN SQLSTATE || ' ' || SQLERRM;
	END \$\$" >/dev/null
img="pg_read_binary_file('$TL_REPO/test/fixtures/images/red-5x3.png')"
bad=$(k=0; for t in "${tamper_cases[@]}"; do
	k=$((k + 1))
	m=$(q -d $db -c "SELECT tl_import_weights('tampered-$k', pg_read_binary_file('$work/tiny.pth'), '{ants,bees,wasps}')")
	q -d $db -c "${t//MODEL_ID/$m}" >/dev/null
	for call in "SELECT tl_predict($img, 'tampered-$k')" "SELECT tl_export('tampered-$k', 'pth')" \
			"SELECT tl_predict_proba($img, 'tampered-$k')"; do
		r=$(q -d $db -c "SELECT try(\$q\$$call\$q\$)" 2>&1)
		[[ $r == ok ]] || [[ $r =~ ^(22|42|54|XX001|0A)[0-9A-Z]*\  ]] || echo "$t | $call: $r"; [ -n "${TL_VERBOSE:-}" ] && echo "# $r" >&2
	done
done)
is "$bad" "" "tampered stored models (${#tamper_cases[@]} kinds): tl_predict, tl_predict_proba and tl_export refuse them with a clear error or work"
# NaN weights: a named error, not a class picked from NaN scores (nor a jsonb syntax error)
m=$(q -d $db -c "SELECT tl_import_weights('nan-weights', pg_read_binary_file('$work/tiny.pth'), '{ants,bees,wasps}')")
q -d $db -c "UPDATE tl_model_tensors SET data = decode(repeat('0000c07f', length(data) / 4), 'hex') WHERE model_id = $m AND key = 'fc.weight'" >/dev/null
is "$(q -d $db -c "SELECT try(\$q\$SELECT tl_predict($img, 'nan-weights')\$q\$)") | $(q -d $db -c "SELECT try(\$q\$SELECT tl_predict_proba($img, 'nan-weights')\$q\$)")" \
	"XX001 model \"nan-weights\" produced a non-finite score for class \"ants\" | XX001 model \"nan-weights\" produced a non-finite score for class \"ants\"" \
	"a model with NaN weights: tl_predict and tl_predict_proba say so (XX001)"

crash_watch_check "after $(( n_mutations + 2 * $(echo "$files" | wc -l) )) hostile checkpoints"

[ -n "${TL_KEEP:-}" ] && tap_exit
dropdb $db
rm -rf "$work"
tap_exit
