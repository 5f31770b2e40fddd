#!/usr/bin/env bash
# transfer.model_files (src/pg/model_file.c): the first process to load a
# model version for prediction only marks it; the second writes the built
# network to base/pgsql_tmp; later processes map that file (DEBUG1 says so)
# and predict bitwise the same probabilities; a changed model starts over
# (the old file and marker are removed) and predictions follow the new
# weights; a damaged file is removed, the model is loaded from its tables
# and written again; a role that may not read the model gets 42501 although
# the file exists; and with model_files = off nothing is mapped or written.
set -u
. "$(dirname "$0")/../lib/predict_setup.sh"
. "$TL_REPO/scripts/pgcluster.sh"
db=model_files

echo "1..18"
predict_setup_db "$db"
dboid=$(q "$db" "SELECT oid FROM pg_database WHERE datname = current_database()")
model=$(q "$db" "SELECT id FROM tl_stored_models WHERE name = 'predict_a'")
prefix="pgsql_tmp_transfer_${dboid}_${model}_"
files() {			# this model's files (other tests' databases have their own)
	q "$db" "SELECT coalesce(string_agg(name, ' ' ORDER BY name), '') FROM pg_ls_tmpdir()
		WHERE name LIKE '${prefix}%' AND name NOT LIKE '%.tmp' AND name NOT LIKE '%.seen'"
}
digest_sql="SELECT md5(string_agg(tl_predict_proba(img, 'predict_a')::text, ',' ORDER BY id))
	FROM tl_images WHERE dataset = 'psynth'"
session() {			# session [SETTING...]: a new connection's digest, with its DEBUG1 and LOG lines
	local settings=""
	for s in "$@"; do settings+="SET $s; "; done
	psql -X -v ON_ERROR_STOP=1 -qAt -d "$db" -c "SET client_min_messages = debug1; $settings" \
		-c "$digest_sql" 2>&1
}
digest_of() { grep -E '^[0-9a-f]{32}$' <<<"$1"; }

is "$(files)" "" "no file for the model before any prediction"
first=$(session)
d1=$(digest_of "$first")
[[ ${#d1} = 32 && $first == *"marked in"* && $first != *"written to"* && $first != *"mapped from"* ]]
ok $? "the first session loads the model from its tables and only marks it"
is "$(files)" "" "so there is no file yet"
second=$(session)
[[ $second == *"written to"* && $second != *"mapped from"* ]] && [ "$(digest_of "$second")" = "$d1" ]
ok $? "the second session loads it from its tables too, and writes its file"
f1=$(files)
[[ $f1 == "$prefix"* && $f1 != *" "* ]]
ok $? "one file for the model: $f1"

third=$(session)
[[ $third == *"mapped from \"base/pgsql_tmp/$f1\""* && $third != *"written to"* ]]
ok $? "the next session maps that file and writes nothing"
is "$(digest_of "$third")" "$d1" "and predicts bitwise the same probabilities"

# ---- a damaged file: removed, loaded from the tables, written again ----
datadir=$(q "$db" "SHOW data_directory")
printf 'not a network' | tl_as_server dd of="$datadir/base/pgsql_tmp/$f1" conv=notrunc status=none
damaged=$(session "client_min_messages = log")
[[ $damaged == *"removing model file"*"not a network file of this build"* ]]
ok $? "a damaged file is refused with a LOG line and removed"
is "$(digest_of "$damaged")" "$d1" "the model is loaded from its tables instead: the same probabilities"
after=$(session)
[[ $after == *"mapped from"* ]] && [ "$(digest_of "$after")" = "$d1" ]
ok $? "its file was written again, and maps with the same probabilities"

# ---- a changed model: the old file gone, a new one, the new weights ----
q "$db" "UPDATE tl_model_tensors SET data = '\\x0000c8c20000c842' WHERE key = 'fc.bias'
	AND model_id = $model" >/dev/null
changed=$(session)
d2=$(digest_of "$changed")
[[ ${#d2} = 32 && $d2 != "$d1" && $changed == *"marked in"* && $changed != *"mapped from"* ]]
ok $? "after an UPDATE of its tensors the model is loaded from the tables, with the new weights"
is "$(files)" "" "the old version's file is removed"
[[ $(session) == *"written to"* ]]
f2=$(files)
[[ $f2 == "$prefix"* && $f2 != *" "* && $f2 != "$f1" ]]
ok $? "the next session writes the new version's file ($f2)"
latest=$(session)
[[ $latest == *"mapped from"* ]] && [ "$(digest_of "$latest")" = "$d2" ]
ok $? "a later session maps the new file: the new probabilities"

# ---- privileges are checked before any file is looked at ----
q "$db" "DO \$\$ BEGIN CREATE ROLE tl_model_files_other; EXCEPTION WHEN duplicate_object THEN NULL; END \$\$;
	GRANT SELECT ON tl_images TO tl_model_files_other" >/dev/null
denied=$(psql -X -qAt -d "$db" -c "SET ROLE tl_model_files_other" -c "SET client_min_messages = debug1" \
	-c "$digest_sql" 2>&1)
[[ $denied == *"permission denied"* && $denied != *"mapped from"* ]]
ok $? "a role that may not read the model's tables gets permission denied, not the file's network"

# ---- transfer.model_files = off ----
off=$(session "transfer.model_files = off")
[[ $off != *"mapped from"* && $off != *"written to"* ]] && [ "$(digest_of "$off")" = "$d2" ]
ok $? "with transfer.model_files = off the model is loaded from its tables and nothing is written"
# (a C function first: the setting exists once the library is loaded)
out=$(psql -X -qAt -d "$db" -c "SELECT tl_predict_threads()" -c "SET ROLE tl_model_files_other" \
	-c "SET transfer.model_files = off" 2>&1)
[[ $out == *"permission denied to set parameter"* ]]
ok $? "only superusers change transfer.model_files"
is "$(psql -X -qAt -d "$db" -c "SELECT tl_predict_threads()" -c "SHOW transfer.model_files" | tail -n 1)" "on" \
	"transfer.model_files is on by default"

q "$db" "DROP OWNED BY tl_model_files_other; DROP ROLE tl_model_files_other" >/dev/null
tap_exit
