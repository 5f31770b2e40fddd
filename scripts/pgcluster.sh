# pgcluster.sh - throwaway PostgreSQL clusters for tests, demos and benchmarks.
# Source it from bash:  . scripts/pgcluster.sh
#
#   tl_build_install      build the extension and install it into a private copy
#                         of the PostgreSQL installation (build/tmp_install), so
#                         no root is needed and checkouts don't disturb each other
#   tl_cluster_start DIR [SETTING...]
#                         initdb + start a cluster in DIR (wiped first) on its
#                         own port and socket; extra postgresql.conf lines
#   tl_cluster_stop DIR   stop it (callers trap this on EXIT)
#   tl_psql ARGS...       psql against the running cluster as its superuser
#   tl_as_server CMD...   run a command as the OS user the server runs as
#   tl_image_subset DEST  the small image tree the ingestion tests import
#   $TL_HYMENOPTERA       the tutorial dataset beside the checkout
#
# As root the server runs as the unprivileged OS user "postgres" (created by
# Debian's postgresql package, or here if missing); otherwise as the caller.
# Exports PGHOST, PGPORT, PGUSER, PGDATABASE and puts the private bin dir first on PATH.

TL_REPO=${TL_REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
TL_PG_CONFIG=${PG_CONFIG:-$(command -v pg_config || echo /usr/lib/postgresql/15/bin/pg_config)}
TL_TMP_INSTALL=${TL_TMP_INSTALL:-$TL_REPO/build/tmp_install}

tl_log() { printf '== %s\n' "$*" >&2; }

if [ "$(id -u)" = 0 ]; then
	TL_SERVER_USER=${TL_SERVER_USER:-postgres}
	id "$TL_SERVER_USER" >/dev/null 2>&1 || useradd --system --home-dir /nonexistent --shell /usr/sbin/nologin "$TL_SERVER_USER"
else
	TL_SERVER_USER=$(id -un)
fi

tl_as_server() {
	if [ "$(id -u)" = 0 ]; then
		runuser -u "$TL_SERVER_USER" -- env PATH="$PATH" "$@"
	else
		"$@"
	fi
}

# A private copy of the server installation, found relative to its binaries
# (PostgreSQL installations are relocatable), with this extension installed.
tl_build_install() {
	local bindir sharedir libdir pkglibdir
	bindir=$("$TL_PG_CONFIG" --bindir)
	sharedir=$("$TL_PG_CONFIG" --sharedir)
	libdir=$(dirname "$bindir")
	if [ ! -x "$TL_TMP_INSTALL$bindir/postgres" ]; then
		tl_log "copying $libdir and $sharedir into $TL_TMP_INSTALL"
		mkdir -p "$TL_TMP_INSTALL$(dirname "$libdir")" "$TL_TMP_INSTALL$(dirname "$sharedir")"
		cp -a "$libdir" "$TL_TMP_INSTALL$(dirname "$libdir")/"
		cp -a "$sharedir" "$TL_TMP_INSTALL$(dirname "$sharedir")/"
	fi
	tl_log "building transfer"
	make -C "$TL_REPO" -s -j"$(nproc)" PG_CONFIG="$TL_PG_CONFIG" >/dev/null || return 1
	make -C "$TL_REPO" -s install PG_CONFIG="$TL_PG_CONFIG" DESTDIR="$TL_TMP_INSTALL" >/dev/null || return 1
	chmod -R a+rX "$TL_TMP_INSTALL"
	export PATH="$TL_TMP_INSTALL$bindir:$PATH"
	export PG_CONFIG="$TL_TMP_INSTALL$bindir/pg_config"
}

# A port derived from the directory, so clusters of different checkouts don't collide.
tl_port_for() {
	echo $(( 50000 + $(printf '%s' "$1" | cksum | cut -d' ' -f1) % 10000 ))
}

# As root the server runs as $TL_SERVER_USER, which must reach the private
# installation and the cluster directory: say so instead of failing obscurely.
tl_check_server_access() {
	[ "$(id -u)" = 0 ] || return 0
	tl_as_server test -r "$1" -a -x "$1" && return 0
	tl_log "the server runs as OS user $TL_SERVER_USER, which cannot reach $1;"
	tl_log "put the checkout where that user can read it (e.g. chmod o+x on its parent directories)"
	return 1
}

tl_cluster_start() {
	local dir port
	dir=$(mkdir -p "$1" && cd "$1" && pwd) || return 1; shift
	tl_check_server_access "$(dirname "$dir")" || return 1
	tl_check_server_access "$TL_TMP_INSTALL" || return 1
	port=${TL_PORT:-$(tl_port_for "$dir")}
	tl_cluster_stop "$dir" 2>/dev/null
	rm -rf "$dir"
	mkdir -p "$dir"
	chmod 755 "$dir"
	[ "$(id -u)" = 0 ] && chown "$TL_SERVER_USER" "$dir"
	tl_as_server initdb -D "$dir/data" -U "$TL_SERVER_USER" --auth=trust --no-sync -E UTF8 --locale=C >"$dir/initdb.log" 2>&1 \
		|| { cat "$dir/initdb.log" >&2; return 1; }
	cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = ''
port = $port
unix_socket_directories = '$dir'
fsync = off
max_worker_processes = 16
max_parallel_workers = 8
max_parallel_workers_per_gather = 2
shared_buffers = 256MB
logging_collector = off
log_min_messages = warning
log_line_prefix = '%m [%p] '
lc_messages = 'C'
CONF
	for setting in "$@"; do echo "$setting" >>"$dir/data/postgresql.conf"; done
	tl_as_server pg_ctl -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null \
		|| { cat "$dir/server.log" >&2; return 1; }
	export PGHOST=$dir PGPORT=$port PGUSER=$TL_SERVER_USER PGDATABASE=postgres
	tl_log "cluster running in $dir (port $port, server user $TL_SERVER_USER)"
}

tl_cluster_stop() {
	local dir
	dir=$(cd "$1" 2>/dev/null && pwd) || return 0
	[ -f "$dir/data/postmaster.pid" ] || return 0
	tl_as_server pg_ctl -D "$dir/data" -m fast -w -t 60 stop >/dev/null 2>&1 \
		|| tl_as_server pg_ctl -D "$dir/data" -m immediate -w stop >/dev/null 2>&1
}

tl_psql() {
	psql -X -v ON_ERROR_STOP=1 -q "$@"
}

# The dataset beside the repository (read-only, never copied into the repo):
# $TL_HYMENOPTERA if set, else ../shared/data/hymenoptera_data next to this
# checkout, or next to the main checkout when this is a git worktree.
tl_find_hymenoptera() {
	local common cand
	common=$(git -C "$TL_REPO" rev-parse --path-format=absolute --git-common-dir 2>/dev/null)
	for cand in "$TL_REPO/../shared/data/hymenoptera_data" \
			${common:+"$(dirname "$common")/../shared/data/hymenoptera_data"}; do
		if [ -d "$cand/train" ]; then
			(cd "$cand" && pwd)
			return 0
		fi
	done
	echo "$TL_REPO/../shared/data/hymenoptera_data"
	return 1
}
TL_HYMENOPTERA=${TL_HYMENOPTERA:-$(tl_find_hymenoptera)}

# tl_image_subset DEST: a small ImageFolder tree for the ingestion tests,
# copied from the dataset beside the repo (never committed) and readable by
# the server: the first JPEGs (byte order) of each class, hymenoptera's GIF,
# the committed PNG fixture, and entries every importer must skip: a hidden
# file, a non-image called .jpg, a directory inside a class, a file directly
# in a split directory and a top-level file that is not a split.
tl_image_subset() {
	local dest=$1 src=$TL_HYMENOPTERA split cls n f
	if [ ! -f "$src/train/ants/imageNotFound.gif" ]; then
		tl_log "dataset not found: $src (expected beside the repository)"
		return 1
	fi
	rm -rf "$dest"
	for split in train val; do
		for cls in ants bees; do
			n=2
			[ "$split/$cls" = train/ants ] && n=3
			mkdir -p "$dest/$split/$cls"
			for f in $(cd "$src/$split/$cls" && ls | LC_ALL=C sort | grep '\.jpg$' | head -n "$n"); do
				cp "$src/$split/$cls/$f" "$dest/$split/$cls/"
			done
		done
	done
	cp "$src/train/ants/imageNotFound.gif" "$dest/train/ants/"
	cp "$TL_REPO/test/fixtures/images/red-5x3.png" "$dest/val/bees/"
	cp "$dest/train/bees/$(ls "$dest/train/bees" | head -n 1)" "$dest/train/bees/.hidden.jpg"
	echo "not an image" >"$dest/train/bees/notes.jpg"
	mkdir -p "$dest/val/ants/nested"
	echo "split-level file" >"$dest/train/README.txt"
	echo "top-level file" >"$dest/LICENSE.txt"
	chmod -R a+rX "$dest"
}

# tl_standby_start PRIMARY_DIR DIR: a hot standby of the running cluster in
# PRIMARY_DIR (pg_basebackup -R, streaming replication), on its own port
# (tl_port_for DIR) and socket directory DIR.  PG* variables are not changed.
tl_standby_start() {
	local primary=$1 dir=$2 pport psock port
	pport=$(sed -n 4p "$primary/data/postmaster.pid")
	psock=$(sed -n 5p "$primary/data/postmaster.pid")
	port=$(tl_port_for "$dir")
	tl_cluster_stop "$dir" 2>/dev/null
	rm -rf "$dir"
	mkdir -p "$dir"
	chmod 755 "$dir"
	[ "$(id -u)" = 0 ] && chown "$TL_SERVER_USER" "$dir"
	tl_as_server pg_basebackup -h "$psock" -p "$pport" -U "$TL_SERVER_USER" -D "$dir/data" \
		-R -X stream --checkpoint=fast >"$dir/basebackup.log" 2>&1 \
		|| { cat "$dir/basebackup.log" >&2; return 1; }
	cat >>"$dir/data/postgresql.conf" <<CONF
port = $port
unix_socket_directories = '$dir'
hot_standby = on
CONF
	tl_as_server pg_ctl -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null \
		|| { cat "$dir/server.log" >&2; return 1; }
	tl_log "standby of $primary running in $dir (port $port)"
}
