#!/usr/bin/env bash
# tl_import_folder and the file system: what SQL alone can't set up.  A FIFO
# is skipped without blocking, symbolic links are followed (a broken one is
# skipped), and a file the server may not read fails the whole import with
# 42501, naming the file, importing nothing.  Prints TAP; run by
# scripts/test.sh with the throwaway cluster's environment.
set -uo pipefail
cd "$(dirname "$0")/../.."
. scripts/pgcluster.sh
. test/t/tap.bash

q() { tl_psql -At "$@"; }

echo "1..6"

work=$TL_REPO/build/test-data/import-files
rm -rf "$work"
tree=$work/images
mkdir -p "$tree/train/ants"
jpg=$(ls "$TL_HYMENOPTERA"/train/ants/*.jpg | head -n 1)
cp "$jpg" "$tree/train/ants/a.jpg"
mkfifo "$tree/train/ants/b-fifo.jpg"
ln -s "$jpg" "$tree/train/ants/c-link.jpg"
ln -s "$tree/train/ants/missing.jpg" "$tree/train/ants/d-broken.jpg"
chmod -R a+rX "$work"

db=tl_import_files
dropdb --if-exists $db 2>/dev/null
createdb $db && q -d $db -c 'CREATE EXTENSION transfer'
ok $? "created the database"

# timeout: a blocking open of the FIFO would hang the backend.
out=$(timeout 60 psql -X -q -At -d $db -c "SELECT split, label, imported, existing, skipped
	FROM tl_import_folder('files', '$tree')" 2>&1)
is "$out" 'NOTICE:  skipping "train/ants/b-fifo.jpg": not a regular file
NOTICE:  skipping "train/ants/d-broken.jpg": not a regular file
train|ants|2|0|2' "a FIFO and a broken link are skipped, a link to an image is followed"
is "$(q -d $db -c "SELECT name FROM tl_images WHERE md5(img) = '$(md5sum <"$jpg" | cut -d' ' -f1)' ORDER BY id" | tr '\n' ' ')" \
	"a.jpg c-link.jpg " "both hold the image's bytes"

# A file the server's OS user can't read.  (As root the server runs as
# another user; otherwise it is the owner, who can't read a mode 000 file.)
cp "$jpg" "$tree/train/ants/e-secret.jpg"
chmod 000 "$tree/train/ants/e-secret.jpg"
if tl_as_server test -r "$tree/train/ants/e-secret.jpg"; then
	echo "ok 4 # skip the server user can read a mode 000 file here"
	echo "ok 5 # skip"
	n=5
else
	out=$(psql -X -q -At -d $db -c "SELECT * FROM tl_import_folder('secret', '$tree')" 2>&1 | grep '^ERROR')
	is "$out" "ERROR:  could not open file \"$tree/train/ants/e-secret.jpg\": Permission denied" \
		"an unreadable file fails the import, naming it"
	out=$(psql -X -q -At -d $db -v VERBOSITY=sqlstate -c "SELECT * FROM tl_import_folder('secret', '$tree')" 2>&1 | grep '^ERROR')
	is "$out" "ERROR:  42501" "with SQLSTATE 42501"
fi
is "$(q -d $db -c "SELECT count(*) FROM tl_images WHERE dataset = 'secret'")" 0 "and imports nothing"

dropdb $db
rm -rf "$work"
tap_exit
