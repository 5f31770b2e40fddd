#!/usr/bin/env bash
# scripts/fetch-pretrained.sh where a newcomer hits it (issue 17): --help
# documents TL_PRETRAINED_DIR; offline, the message says that
# from_scratch => true trains without the weights; a checkout it can't write
# to falls back to a temporary directory and still ends with exit status 2
# and the offline message, not a bare mkdir error; an unwritable
# TL_PRETRAINED_DIR is exit status 2 with a message naming it; --file takes a
# path relative to the caller's directory.  The download URL is a closed
# local port, so it fails at once whatever the network.  Prints TAP.
set -uo pipefail
cd "$(dirname "$0")/../.."
. scripts/pgcluster.sh
. test/t/tap.bash

db=tl_weights_fetch_offline
work=$TL_REPO/build/test-data/weights-fetch-offline
repo=$PWD
rm -rf "$work" && mkdir -p "$work/torch" "$work/dl" "$work/tmp" "$work/caller/rel"
export TORCH_HOME=$work/torch TL_PRETRAINED_URL=http://127.0.0.1:9/resnet18-f37072fd.pth
unset TL_PRETRAINED_DIR TL_PRETRAINED_ANY_HASH
fetch() { "$repo/scripts/fetch-pretrained.sh" -d $db "$@"; }
show() { sed 's/^/# /' "$work/out"; }

echo "1..12"
dropdb --if-exists $db 2>/dev/null
createdb $db && tl_psql -d $db -c 'CREATE EXTENSION transfer'
ok $? "created $db"

scripts/fetch-pretrained.sh --help >"$work/out" 2>&1
status=$?
[ $status = 0 ] && grep -q TL_PRETRAINED_DIR "$work/out" && grep -q 'from_scratch => true' "$work/out"
ok $? "--help documents TL_PRETRAINED_DIR and from_scratch => true"

# offline, with a writable download directory
TL_PRETRAINED_DIR=$work/dl fetch >"$work/out" 2>&1
status=$?
show
is "$status" 2 "offline: exit status 2"
grep -q "from_scratch => true" "$work/out" && grep -q -- "--file /path/to/resnet18-f37072fd.pth" "$work/out"
ok $? "offline: the message mentions from_scratch => true and --file"

# an unwritable TL_PRETRAINED_DIR (below a regular file: even root can't create it)
touch "$work/afile"
TL_PRETRAINED_DIR=$work/afile/dl fetch >"$work/out" 2>&1
status=$?
show
is "$status" 2 "unwritable TL_PRETRAINED_DIR: exit status 2"
grep -q "cannot write to TL_PRETRAINED_DIR=\"$work/afile/dl\"" "$work/out" && ! grep -q '^mkdir:' "$work/out"
ok $? "unwritable TL_PRETRAINED_DIR: the message names it, no bare mkdir error"

# a checkout it can't write to: a copy of the script whose build/ can't be a directory
mkdir -p "$work/co/scripts" && cp scripts/fetch-pretrained.sh "$work/co/scripts/" && touch "$work/co/build"
TMPDIR=$work/tmp "$work/co/scripts/fetch-pretrained.sh" -d $db >"$work/out" 2>&1
status=$?
show
is "$status" 2 "unwritable checkout: exit status 2 (offline)"
grep -q "not writable; downloading into $work/tmp/transfer-pretrained-" "$work/out" &&
	grep -q "from_scratch => true" "$work/out" && ! grep -q '^mkdir:' "$work/out"
ok $? "unwritable checkout: falls back to TMPDIR, says so, then the offline message"

# --file relative to the caller's directory
cp test/fixtures/checkpoint/tiny.pth "$work/caller/rel/tiny.pth"
(cd "$work/caller" && fetch --file rel/missing.pth) >"$work/out" 2>&1
status=$?
show
is "$status" 2 "--file of a missing relative path: exit status 2"
grep -q "$work/caller/rel/missing.pth does not exist" "$work/out"
ok $? "the message names the path from the caller's directory"
(cd "$work/caller" && TL_PRETRAINED_ANY_HASH=1 fetch --file rel/tiny.pth) >"$work/out" 2>&1
status=$?
show
ok $status "--file rel/tiny.pth from the caller's directory is imported"
is "$(tl_psql -At -d $db -c "SELECT count(*) FROM tl_stored_models WHERE name = 'resnet18-imagenet'")" 1 \
	"as resnet18-imagenet"

dropdb $db
rm -rf "$work"
tap_exit
