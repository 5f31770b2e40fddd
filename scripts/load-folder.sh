#!/usr/bin/env bash
# load-folder.sh - load an ImageFolder tree from the client into tl_images,
# for roles that may not read files on the database server (tl_import_folder
# needs superuser or pg_read_server_files).
#
#   scripts/load-folder.sh DATASET PATH [psql options...]
#   scripts/load-folder.sh hymenoptera ~/data/hymenoptera_data -d mydb -h dbhost
#
# PATH/<split>/<class>/<file>, split one of train, val, test.  The same rules
# as tl_import_folder: entries in byte order, hidden entries ignored, files
# that are not JPEG or PNG (judged by the server's tl_image_info from their
# bytes), not regular or larger than transfer.max_image_file_size skipped
# with a NOTICE naming them, existing (dataset, split, label, name) rows left
# alone.  Everything goes through one psql session and one transaction: the
# files are streamed base64-encoded with COPY into a temporary table, then
# checked and inserted on the server.  Prints the same summary as
# tl_import_folder: split, label, imported, existing, skipped.
set -euo pipefail

usage() {
	sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}
die() {
	echo "load-folder.sh: $*" >&2
	exit 1
}

[ $# -ge 2 ] || usage
dataset=$1
root=$2
shift 2
psql_opts=("$@")

[ -n "$dataset" ] || die "dataset name must not be empty"
[ -e "$root" ] || die "directory \"$root\" does not exist"
[ -d "$root" ] || die "\"$root\" is not a directory"
splits=()
for s in train val test; do
	[ -d "$root/$s" ] && splits+=("$s")
done
[ ${#splits[@]} -gt 0 ] ||
	die "no split directories in \"$root\" (expected $root/<split>/<class>/<file>, split one of train, val, test)"

command -v base64 >/dev/null || die "base64 (coreutils) is required"

psql_run() {
	psql -X -q -v ON_ERROR_STOP=1 "${psql_opts[@]}" "$@"
}

# The effective transfer.max_image_file_size, read before sending anything.
# Unset everywhere means the default, 64MB; a bare number is in kB.
max_bytes=$(psql_run -At -c "
	SELECT CASE WHEN v ~ '^\s*[0-9]+\s*$' THEN v::bigint * 1024 ELSE pg_catalog.pg_size_bytes(v) END
	FROM (SELECT coalesce(pg_catalog.current_setting('transfer.max_image_file_size', true), '64MB') AS v) s") ||
	die "could not connect or read transfer.max_image_file_size"

# COPY text format: escape backslash, tab, newline and carriage return.
copy_text() {
	local s=$1
	s=${s//\\/\\\\}
	s=${s//$'\t'/\\t}
	s=${s//$'\n'/\\n}
	s=${s//$'\r'/\\r}
	printf '%s' "$s"
}
# One row of pg_temp.tl_load: split, label, name, skip reason, base64 bytes.
# A row without name (\N) announces a class directory, so empty ones are reported too.
row() {
	printf '%s\t%s\t%s\t%s\t' "$(copy_text "$1")" "$(copy_text "$2")" "$3" "$4"
}

# The rows, produced while psql consumes them.
emit_rows() {
	local LC_ALL=C			# glob results in byte order, like the server's sort
	local split class f name size entry
	shopt -s nullglob
	for entry in "$root"/*; do
		name=${entry##*/}
		case " ${splits[*]} " in *" $name "*) [ -d "$entry" ] && continue ;; esac
		echo "NOTICE:  ignoring \"$name\": not a split directory (train, val or test)" >&2
	done
	for split in "${splits[@]}"; do
		for class in "$root/$split"/*; do
			name=${class##*/}
			if [ ! -d "$class" ]; then
				echo "NOTICE:  skipping \"$split/$name\": not inside a class directory" >&2
				continue
			fi
			row "$split" "$name" '\N' '\N'
			echo '\N'
			for f in "$class"/*; do
				name=$(copy_text "${f##*/}")
				if [ ! -f "$f" ]; then		# follows symlinks, like the server's stat()
					row "$split" "${class##*/}" "$name" "not a regular file"
					echo '\N'
					continue
				fi
				size=$(stat -L -c %s -- "$f")
				if [ "$size" -gt "$max_bytes" ]; then
					row "$split" "${class##*/}" "$name" "file of $size bytes exceeds transfer.max_image_file_size ($max_bytes bytes)"
					echo '\N'
					continue
				fi
				row "$split" "${class##*/}" "$name" '\N'
				base64 -w0 -- "$f"
				echo
			done
		done
	done
}

{
	cat <<'SQL'
BEGIN;
CREATE TEMPORARY TABLE tl_load (
	ord		bigint GENERATED ALWAYS AS IDENTITY,
	split	text NOT NULL,
	label	text NOT NULL,
	name	text,
	skip	text,
	data	text
) ON COMMIT DROP;
CREATE TEMPORARY TABLE tl_load_counts (
	ord		bigint,
	split	text,
	label	text,
	imported bigint DEFAULT 0,
	existing bigint DEFAULT 0,
	skipped	bigint DEFAULT 0,
	PRIMARY KEY (split, label)
) ON COMMIT DROP;
SQL
	echo "SELECT pg_catalog.set_config('tl_load.dataset', :'dataset', true) \\g /dev/null"
	echo "COPY pg_temp.tl_load (split, label, name, skip, data) FROM STDIN;"
	emit_rows
	echo '\.'
	cat <<'SQL'
DO $load$
DECLARE
	ds text := pg_catalog.current_setting('tl_load.dataset');
	nsp name;
	r record;
	img bytea;
	info record;
	n bigint;
BEGIN
	SELECT n.nspname INTO nsp
	FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
	WHERE e.extname = 'transfer';
	IF nsp IS NULL THEN
		RAISE EXCEPTION 'extension "transfer" is not installed in this database'
			USING ERRCODE = 'undefined_object', HINT = 'Run CREATE EXTENSION transfer.';
	END IF;
	-- The extension's objects, whatever the caller's search_path.
	PERFORM pg_catalog.set_config('search_path',
		pg_catalog.quote_ident(nsp) || ', pg_catalog, pg_temp', true);

	FOR r IN SELECT * FROM pg_temp.tl_load ORDER BY ord LOOP
		IF r.name IS NULL THEN
			INSERT INTO pg_temp.tl_load_counts (ord, split, label) VALUES (r.ord, r.split, r.label);
			CONTINUE;
		END IF;
		IF r.skip IS NULL THEN
			img := pg_catalog.decode(r.data, 'base64');
			BEGIN
				info := tl_image_info(img);
				IF info.width::bigint * info.height >
						pg_catalog.current_setting('transfer.max_image_pixels')::bigint THEN
					r.skip := pg_catalog.format('%sx%s pixels exceed transfer.max_image_pixels (%s)',
						info.width, info.height,
						pg_catalog.current_setting('transfer.max_image_pixels'));
				END IF;
			EXCEPTION WHEN feature_not_supported OR invalid_binary_representation
					OR program_limit_exceeded THEN
				r.skip := SQLERRM;
			END;
		END IF;
		IF r.skip IS NOT NULL THEN
			RAISE NOTICE 'skipping "%/%/%": %', r.split, r.label, r.name, r.skip;
			UPDATE pg_temp.tl_load_counts SET skipped = skipped + 1
			WHERE split = r.split AND label = r.label;
			CONTINUE;
		END IF;
		INSERT INTO tl_images (dataset, split, label, name, img)
		VALUES (ds, r.split, r.label, r.name, img)
		ON CONFLICT (dataset, split, label, name) DO NOTHING;
		GET DIAGNOSTICS n = ROW_COUNT;
		UPDATE pg_temp.tl_load_counts
		SET imported = imported + n, existing = existing + 1 - n
		WHERE split = r.split AND label = r.label;
	END LOOP;
END
$load$;
SELECT split, label, imported, existing, skipped FROM pg_temp.tl_load_counts ORDER BY ord;
COMMIT;
SQL
} | psql_run -v dataset="$dataset"
