#!/usr/bin/env bash
# Hostile images through SQL while a crash watch runs (test/t/reliability_lib.bash):
# every file of the corpus from test/scripts/make_bad_images.py (truncations,
# bit flips, 0 and 65535 dimensions, a pixel bomb, 1x10000 and 10000x1,
# 16-bit and interlaced PNG, CMYK and progressive JPEG, wrong magic, other
# formats, random bytes) is stored in tl_images and shown by tl_preview in a
# train split (decode + RandomResizedCrop + flip) and a val split (decode +
# Resize + CenterCrop), each in its own statement, and probed by
# tl_image_info.  Each must give the outcome the manifest allows (valid
# images a preview, over-limit ones 54000, broken ones 22P03 or 0A000), never
# an internal error; afterwards no backend has crashed.  Prints TAP.
set -uo pipefail
cd "$(dirname "$0")/../.."
. scripts/pgcluster.sh
. test/t/reliability_lib.bash

if ! /usr/bin/python3 -c 'import PIL, numpy, torchvision' 2>/dev/null; then
	echo "1..0 # SKIP /usr/bin/python3 lacks PIL/numpy/torchvision to make the corpus"; exit 0
fi
echo "1..11"

db=tl_hostile_images
work=$TL_REPO/build/test-data/hostile-images
rm -rf "$work" && mkdir -p "$work"
/usr/bin/python3 test/scripts/make_bad_images.py "$work" 2>/dev/null && chmod -R a+rX "$work"
ok $? "the hostile image corpus is made"
n_files=$(wc -l <"$work/manifest.txt")

dropdb --if-exists $db 2>/dev/null
createdb $db && q -d $db -c 'CREATE EXTENSION transfer' && q -d $db <<'SQL'
-- One input, one statement: 'ok <labels>' or '<SQLSTATE> <message>'.
CREATE FUNCTION try_preview(ds text, sp text) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
	RETURN 'ok ' || (SELECT array_length(labels, 1) FROM tl_preview(ds, sp, 4, 1));
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ' ' || SQLERRM;
END $$;
CREATE FUNCTION try_info(data bytea) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
	RETURN 'ok ' || (SELECT format || ' ' || width || 'x' || height FROM tl_image_info(data));
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ' ' || SQLERRM;
END $$;
SQL
ok $? "a database with the extension and the statement wrappers"

# Each file becomes a one-image dataset with a train and a val split (tl_images
# refuses empty values, so the empty input is tried through tl_image_info only).
load=$work/load.sql
: >"$load"
while IFS=$'\t' read -r file expect pillow; do
	[ -s "$work/$file" ] || continue
	printf "INSERT INTO tl_images (dataset, split, label, name, img) SELECT '%s', s, 'x', 'f', pg_read_binary_file('%s') FROM (VALUES ('train'), ('val')) v(s);\n" \
		"$file" "$work/$file" >>"$load"
done <"$work/manifest.txt"
q -d $db -f "$load" >/dev/null
ok $? "the corpus is stored in tl_images"

crash_watch_start

script=$work/try.sql
: >"$script"
while IFS=$'\t' read -r file expect pillow; do
	printf "SELECT '%s %s info ' || try_info(pg_read_binary_file('%s'));\n" "$file" "$expect" "$work/$file" >>"$script"
	[ -s "$work/$file" ] || continue
	for sp in train val; do
		printf "SELECT '%s %s %s ' || try_preview('%s', '%s');\n" "$file" "$expect" "$sp" "$file" "$sp" >>"$script"
	done
done <"$work/manifest.txt"
out=$(q -d $db -f "$script" 2>&1)
answered=$(echo "$out" | grep -cE '^[0-9]{3}_[^ ]+ (ok|limit|error|any) (info|train|val) ')
expected=$(( n_files + 2 * $(grep -c . <"$load") ))
is "$answered|$(echo "$out" | grep -cvE '^[0-9]{3}_[^ ]+ (ok|limit|error|any) (info|train|val) ')" "$expected|0" \
	"every input answered, one statement each ($n_files files, $expected statements)"

# field 4 is 'ok' or the SQLSTATE
is "$(echo "$out" | awk '$2 == "ok" && $3 != "info" && $4 != "ok"')" "" \
	"every valid image (1x1, 1x10000, 10000x1, 16-bit, interlaced, CMYK, progressive...) previews in both splits"
is "$(echo "$out" | awk '$2 == "limit" && $3 != "info" && $4 != "54000"')" "" \
	"every over-limit image (65535x65535, a 90-megapixel bomb...) is refused with 54000 before decoding"
is "$(echo "$out" | awk '($2 == "error" || $2 == "any" || $3 == "info") && $4 !~ /^(ok|22P03|0A000|54000)$/')" "" \
	"every other input previews or gives a clear error (22P03 corrupt, 0A000 unsupported, 54000 limit), never XX000 or out of memory"
is "$(echo "$out" | awk '$2 == "error" && $3 != "info" && $4 == "ok"')" "" \
	"no broken input (truncated, wrong magic, foreign format, random bytes) is previewed"

crash_watch_check "after $expected hostile-image statements"
dropdb $db 2>/dev/null
tap_exit
