#!/usr/bin/env bash
# fetch-pretrained.sh - import torchvision's ImageNet ResNet-18 weights as the
# model "resnet18-imagenet", the default base model of tl_train.
#
#   scripts/fetch-pretrained.sh [-d DATABASE] [--file PATH] [--name NAME]
#
# The file is torchvision's resnet18-f37072fd.pth (ResNet18_Weights.IMAGENET1K_V1,
# 44.7 MB).  It is taken from --file (a path relative to the current
# directory or absolute), else from torch's download cache ($TORCH_HOME or
# ~/.cache/torch/hub/checkpoints), else from the download directory, else
# downloaded from download.pytorch.org into the download directory.  Its
# SHA-256 must start with f37072fd, as torch.hub checks.  The import goes
# through psql with the usual PGHOST/PGPORT/PGUSER/PGDATABASE environment (or
# -d), so the file need not be readable by the server.
#
# Environment:
#   TL_PRETRAINED_DIR   the download directory (default: build/ in the
#                       checkout; when that is not writable, a directory
#                       under ${TMPDIR:-/tmp})
#   TL_PRETRAINED_URL   where to download the file from
#   TL_PRETRAINED_ANY_HASH=1  import a file whose SHA-256 is not f37072fd...
#
# Without the file, tl_train(..., from_scratch => true) trains from random
# initialisation instead of the ImageNet weights.
#
# Exit status: 0 imported (or already there), 1 error, 2 the file could not
# be found, downloaded or stored (the message says how to get it).
set -euo pipefail
CALLER_DIR=$PWD
cd "$(dirname "$0")/.."

FILE_NAME=resnet18-f37072fd.pth
DIR=${TL_PRETRAINED_DIR:-build}		# where a download goes
URL=${TL_PRETRAINED_URL:-https://download.pytorch.org/models/$FILE_NAME}
HASH_PREFIX=f37072fd
NAME=resnet18-imagenet
FILE=
DB_ARGS=()

die() { echo "fetch-pretrained.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
	case $1 in
		-d) DB_ARGS=(-d "$2"); shift 2 ;;
		--file) FILE=$2; shift 2 ;;
		--name) NAME=$2; shift 2 ;;
		-h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
		*) die "unknown argument \"$1\" (see --help)" ;;
	esac
done
# --file is relative to where the script was called from, not the checkout.
case $FILE in
	''|/*) ;;
	*) FILE=$CALLER_DIR/$FILE ;;
esac

sql() { psql -X -q -At -v ON_ERROR_STOP=1 "${DB_ARGS[@]}" "$@"; }

exists=$(sql -v name="$NAME" <<'SQL'
SELECT count(*) FROM tl_stored_models WHERE name = :'name';
SQL
) || die "could not query the database (is the transfer extension created, and are PGHOST/PGDATABASE set?)"
if [ "$exists" != 0 ]; then
	echo "model \"$NAME\" is already imported"
	exit 0
fi

cache=${TORCH_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/torch}/hub/checkpoints/$FILE_NAME
if [ -z "$FILE" ]; then
	for f in "$cache" "$DIR/$FILE_NAME"; do
		if [ -f "$f" ]; then FILE=$f; break; fi
	done
fi
if [ -z "$FILE" ]; then
	# The download directory must be writable: a read-only checkout falls
	# back to a temporary directory, a TL_PRETRAINED_DIR that isn't is an error.
	if ! { mkdir -p "$DIR" && [ -w "$DIR" ]; } 2>/dev/null; then
		if [ -n "${TL_PRETRAINED_DIR:-}" ]; then
			cat >&2 <<MSG
fetch-pretrained.sh: cannot write to TL_PRETRAINED_DIR="$DIR", where the download goes.
Set TL_PRETRAINED_DIR to a writable directory, or download $FILE_NAME
yourself and run
    scripts/fetch-pretrained.sh --file /path/to/$FILE_NAME
MSG
			exit 2
		fi
		tmp=${TMPDIR:-/tmp}/transfer-pretrained-$(id -u)
		echo "fetch-pretrained.sh: $PWD/$DIR is not writable; downloading into $tmp (set TL_PRETRAINED_DIR to choose)" >&2
		DIR=$tmp
		if ! { mkdir -p "$DIR" && [ -w "$DIR" ]; } 2>/dev/null; then
			echo "fetch-pretrained.sh: cannot write to $DIR either; set TL_PRETRAINED_DIR to a writable directory" >&2
			exit 2
		fi
	fi
	echo "downloading $URL"
	if ! command -v curl >/dev/null ||
		! curl -fL --connect-timeout 20 --max-time 900 --progress-bar -o "$DIR/$FILE_NAME.part" "$URL"; then
		rm -f "$DIR/$FILE_NAME.part"
		cat >&2 <<MSG
fetch-pretrained.sh: could not download $URL (no internet access, or curl missing).
Without it there is no model "$NAME": train from random initialisation with
    SELECT tl_train('finetune', 'mydataset', from_scratch => true);
or name another base model of tl_models with base_model => '...'
(see docs/weights.md).  To use the ImageNet weights, on any machine with
internet access run
    curl -LO $URL
copy $FILE_NAME here and run
    scripts/fetch-pretrained.sh --file /path/to/$FILE_NAME
or, with the file on the database server, in SQL as a superuser or a member of pg_read_server_files:
    SELECT tl_import_weights_file('$NAME', '/path/to/$FILE_NAME');
MSG
		exit 2
	fi
	mv "$DIR/$FILE_NAME.part" "$DIR/$FILE_NAME"
	FILE=$DIR/$FILE_NAME
fi
[ -f "$FILE" ] || { echo "fetch-pretrained.sh: $FILE does not exist" >&2; exit 2; }

hash=$(sha256sum "$FILE" | cut -c1-8)
if [ "$hash" != "$HASH_PREFIX" ] && [ -z "${TL_PRETRAINED_ANY_HASH:-}" ]; then
	die "$FILE has SHA-256 $hash..., not torchvision's $HASH_PREFIX...: damaged or a different file
  (set TL_PRETRAINED_ANY_HASH=1 to import it anyway)"
fi

echo "importing $FILE as model \"$NAME\""
# The file travels as base64 inside the statement, so the server needs no access to it.
{ printf '\\set weights `base64 -w0 %q`\n' "$FILE"
	printf "SELECT tl_import_weights(:'name', decode(:'weights', 'base64'));\n"; } |
	sql -v name="$NAME" >/dev/null || die "the import failed"
sql -v name="$NAME" <<'SQL'
SELECT format('model %s: "%s", %s classes (%s .. %s), base width %s', id, name, num_classes,
              classes[1], classes[num_classes], base_width)
  FROM tl_stored_models WHERE name = :'name';
SQL
