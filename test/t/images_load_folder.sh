#!/usr/bin/env bash
# scripts/load-folder.sh, the client-side loader: the same summary, notices
# and rows as the server-side tl_import_folder on the same tree, images byte
# for byte, idempotent, usable by a role without pg_read_server_files, odd
# file names intact, and clear failures.  Prints TAP; run by scripts/test.sh.
set -uo pipefail
cd "$(dirname "$0")/../.."
. scripts/pgcluster.sh
. test/t/tap.bash

q() { tl_psql -At "$@"; }
rows() {			# rows DB DATASET: split/label/name and md5 of every image
	q -d "$1" -c "SELECT split || '/' || label || '/' || name || ' ' || md5(img)
		FROM tl_images WHERE dataset = '$2' ORDER BY id"
}

echo "1..15"

work=$TL_REPO/build/test-data/load-folder
rm -rf "$work"
tree=$work/images
tl_image_subset "$tree"
ok $? "built the test tree"

db=tl_load_folder
dropdb --if-exists $db 2>/dev/null
dropuser --if-exists tl_loader 2>/dev/null
createdb $db && q -d $db -c 'CREATE EXTENSION transfer'
ok $? "created the database"

# The reference: the server-side import of the same tree, through psql too.
psql -X -q -d $db -c "SELECT * FROM tl_import_folder('server', '$tree')" >"$work/server.out" 2>"$work/server.err"
scripts/load-folder.sh client "$tree" -d $db >"$work/client.out" 2>"$work/client.err"
ok $? "load-folder.sh exits 0"
is "$(cat "$work/client.out")" "$(cat "$work/server.out")" "the same summary as tl_import_folder"
is "$(sort "$work/client.err")" "$(sort "$work/server.err")" "the same notices, naming the skipped files"
is "$(rows $db client)" "$(rows $db server)" "the same rows in the same order, byte-identical images"

scripts/load-folder.sh client "$tree" -d $db >"$work/again.out" 2>/dev/null
is "$(awk -F' *[|] *' 'NR > 2 && NF == 5 { print $3, $4 }' "$work/again.out" | sort -u)" "0 2
0 3" "a second run imports nothing new"
is "$(q -d $db -c "SELECT count(*) FROM tl_images WHERE dataset = 'client'")" 10 "and adds no rows"

# A role that may not read server files loads from the client side (ON
# CONFLICT needs SELECT on the key columns besides INSERT).
createuser tl_loader && q -d $db -c 'GRANT SELECT, INSERT ON tl_images TO tl_loader'
scripts/load-folder.sh by_loader "$tree" -d $db -U tl_loader >/dev/null 2>&1
ok $? "a role without pg_read_server_files can load"
is "$(q -d $db -c "SELECT count(*) FROM tl_images WHERE dataset = 'by_loader'")" 10 "its rows are there"

# Names that need escaping in COPY and in the shell, in labels and files.
odd=$work/odd
mkdir -p "$odd/train/ant photos" "$odd/val/back\\slash"
first_jpg=$(ls "$tree"/train/ants/*.jpg | head -n 1)
cp "$first_jpg" "$odd/train/ant photos/tab"$'\t'"and space.jpg"
cp "$first_jpg" "$odd/train/ant photos/quote'\"and\\back.jpg"
cp "$first_jpg" "$odd/val/back\\slash/"$'new\nline.jpg'
chmod -R a+rX "$odd"
scripts/load-folder.sh odd "$odd" -d $db >/dev/null 2>&1
psql -X -q -d $db -c "SELECT * FROM tl_import_folder('odd_server', '$odd')" >/dev/null 2>&1
is "$(q -d $db -c "SELECT label || '|' || name FROM tl_images WHERE dataset = 'odd' ORDER BY id")" \
	"$(q -d $db -c "SELECT label || '|' || name FROM tl_images WHERE dataset = 'odd_server' ORDER BY id")" \
	"odd names arrive as the server-side import reads them"
is "$(q -d $db -c "SELECT count(*) FROM tl_images WHERE dataset = 'odd' AND md5(img) = '$(md5sum <"$first_jpg" | cut -d' ' -f1)'")" 3 \
	"with their bytes intact"

# Failures: non-zero exit and a message that says what is wrong.
out=$(scripts/load-folder.sh x "$work/missing" -d $db 2>&1)
[ $? -ne 0 ] && grep -q "does not exist" <<<"$out"
ok $? "a missing directory fails: $out"
out=$(scripts/load-folder.sh x "$tree/train" -d $db 2>&1)
[ $? -ne 0 ] && grep -q "no split directories" <<<"$out"
ok $? "a tree without split directories fails"
createdb tl_load_folder_bare
out=$(scripts/load-folder.sh x "$tree" -d tl_load_folder_bare 2>&1)
[ $? -ne 0 ] && grep -q 'extension "transfer" is not installed' <<<"$out"
ok $? "a database without the extension fails clearly"
dropdb tl_load_folder_bare

dropdb $db
dropuser tl_loader
rm -rf "$work"
tap_exit
