#!/usr/bin/env bash
# scripts/fetch-pretrained.sh without internet: a clear failure (exit 2) that
# says how to get the file; with a local file: the import as
# "resnet18-imagenet" (the tiny fixture stands in for torchvision's file,
# with the hash check overridden); a second run finds the model; a file with
# the wrong hash is refused.  Prints TAP.
set -uo pipefail
cd "$(dirname "$0")/../.."
. scripts/pgcluster.sh
. test/t/tap.bash

db=tl_weights_pretrained
work=$TL_REPO/build/test-data/weights-pretrained
rm -rf "$work" && mkdir -p "$work/torch" "$work/dl"
# No cached or previously downloaded file may stand in, and the URL is unreachable.
export TORCH_HOME=$work/torch TL_PRETRAINED_DIR=$work/dl TL_PRETRAINED_URL=http://127.0.0.1:9/resnet18-f37072fd.pth
fetch() { scripts/fetch-pretrained.sh -d $db "$@"; }

echo "1..7"
dropdb --if-exists $db 2>/dev/null
createdb $db && tl_psql -X -q -d $db -c 'CREATE EXTENSION transfer'
ok $? "created $db"

fetch >"$work/out" 2>&1
status=$?
sed 's/^/# /' "$work/out"
[ $status = 2 ] && grep -q "curl -LO http://127.0.0.1:9/resnet18-f37072fd.pth" "$work/out" &&
	grep -q -- "--file /path/to/resnet18-f37072fd.pth" "$work/out"
ok $? "offline: exit status 2 and instructions to download and import the file"

fetch --file test/fixtures/checkpoint/tiny.pth >"$work/out" 2>&1
status=$?
sed 's/^/# /' "$work/out"
[ $status = 1 ] && grep -q "not torchvision's f37072fd" "$work/out"
ok $? "a file with another SHA-256 is refused"

TL_PRETRAINED_ANY_HASH=1 fetch --file test/fixtures/checkpoint/tiny.pth >"$work/out" 2>&1
status=$?
sed 's/^/# /' "$work/out"
ok $status "a local file is imported"
[ "$(tl_psql -X -At -d $db -c "SELECT name || ':' || num_classes || ':' || (source->>'format')
	FROM tl_stored_models")" = "resnet18-imagenet:3:torch-zip" ]
ok $? "as model resnet18-imagenet"

fetch >"$work/out" 2>&1
status=$?
[ $status = 0 ] && grep -q 'already imported' "$work/out"
ok $? "a second run finds the model and does nothing"

dropdb $db
ok $? "dropped $db"
rm -rf "$work"
