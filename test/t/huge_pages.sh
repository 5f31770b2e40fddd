#!/usr/bin/env bash
# transfer.huge_pages (src/core/nn/tl_memory.c): off by default, a server
# setting (SIGHUP) that a session cannot SET, and when turned on in the
# configuration a backend's network buffers are advised onto transparent
# huge pages (its /proc/self/smaps shows THP-eligible mappings) while the
# predictions stay bitwise the same.  The smaps checks need Linux's "madvise"
# THP mode, where only our advice decides; elsewhere they are skipped.
set -u
. "$(dirname "$0")/../lib/predict_setup.sh"
db=huge_pages

echo "1..8"
predict_setup_db "$db"
restore() { psql -X -qAt -d "$db" -c "LOAD 'transfer'" -c "ALTER SYSTEM RESET transfer.huge_pages" \
	-c "SELECT pg_reload_conf()" >/dev/null 2>&1; }
trap restore EXIT

is "$(psql -X -qAt -d "$db" -c "LOAD 'transfer'" -c "SHOW transfer.huge_pages")" "off" "transfer.huge_pages is off by default"
err=$(psql -X -qAt -d "$db" -v VERBOSITY=verbose -c "LOAD 'transfer'" -c "SET transfer.huge_pages = on" 2>&1)
[[ $err == *"55P02"*"cannot be changed now"* ]]
ok $? "a session cannot SET it (55P02): it is a server setting"

# A full-width network (45 MB of weights) so its buffers are large enough to advise.
q "$db" "INSERT INTO tl_images (dataset, split, label, name, img)
	SELECT 'hp', s, label, name, img FROM tl_images, (VALUES ('train'), ('val')) v(s) WHERE dataset = 'psynth'" >/dev/null &&
	q "$db" "SELECT tl_train('finetune', 'hp', from_scratch => true, base_width => 64, image_size => 64,
		epochs => 1, seed => 1, model_name => 'hp', wait => true)" >/dev/null 2>&1
is "$(q "$db" "SELECT count(*) FROM tl_stored_models WHERE name = 'hp' AND base_width = 64")" "1" \
	"a full-width model trained from scratch"

# a new session's digest of the predictions, then its THP-eligible mappings
session() {
	psql -X -v ON_ERROR_STOP=1 -qAt -d "$db" -c "SET transfer.model_files = off" \
		-c "SELECT md5(string_agg(tl_predict_proba(img, 'hp')::text, ',' ORDER BY id)) FROM tl_images WHERE dataset = 'psynth'" \
		-c "SELECT count(*) FROM regexp_split_to_table(pg_read_file('/proc/self/smaps'), E'\n') l
			WHERE l ~ '^THPeligible: +1'" -c "SHOW transfer.huge_pages" | tr '\n' ' '
}
madvise=0
grep -q '\[madvise\]' /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null && madvise=1
read -r d_off n_off s_off <<<"$(session)"
if [ $madvise = 1 ]; then
	is "$n_off" "0" "huge pages off: no THP-eligible mapping in the predicting backend"
else
	echo "ok 4 # SKIP THP mode is not madvise"; tap_n=4
fi

psql -X -qAt -d "$db" -c "LOAD 'transfer'" -c "ALTER SYSTEM SET transfer.huge_pages = on" -c "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
read -r d_on n_on s_on <<<"$(session)"
is "$s_on" "on" "after ALTER SYSTEM and a reload, a new session has it on"
if [ $madvise = 1 ]; then
	[ "${n_on:-0}" -gt 0 ]
	ok $? "huge pages on: the predicting backend has THP-eligible mappings ($n_on)"
else
	echo "ok 6 # SKIP THP mode is not madvise"; tap_n=6
fi
[ ${#d_off} = 32 ] && [ "$d_on" = "$d_off" ]
ok $? "the predictions are bitwise the same either way"

restore
trap - EXIT
is "$(psql -X -qAt -d "$db" -c "LOAD 'transfer'" -c "SHOW transfer.huge_pages")" "off" "reset, it is off again"
dropdb "$db"
tap_exit
