#!/usr/bin/env bash
# check-layering.sh - the layering rules of src/, checked on the built objects.
#
#   make && scripts/check-layering.sh [-v]
#
# 1. No circles between files: the file-level call graph (file A -> file B
#    when A's object uses a global symbol that B's object defines, from nm)
#    of every object under src/ (src/core/** and src/pg/**) has no cycle.
#    Each cycle is printed as its files and the edges (with the symbols)
#    between them.
# 2. src/core never calls into src/pg.
# 3. No file under src/core includes a PostgreSQL header.
#
# -v also prints the whole graph.  Exits 0 when every rule holds, 1 when one
# is broken, 2 when the objects are missing or older than their sources (run
# make first).  Objects whose source is gone (left over from a move) are
# ignored.
set -euo pipefail

cd "$(dirname "$0")/.."
verbose=0
[ "${1:-}" = "-v" ] && verbose=1

status=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# ---- the objects: one per source under src/ ----
mapfile -t srcs < <(find src -name '*.c' | LC_ALL=C sort)
if [ "${#srcs[@]}" -eq 0 ]; then
	echo "check-layering: no sources under src/" >&2
	exit 2
fi
stale=0
for c in "${srcs[@]}"; do
	o=${c%.c}.o
	if [ ! -f "$o" ] || [ "$o" -ot "$c" ]; then
		echo "check-layering: $o is missing or older than $c (run make first)" >&2
		stale=1
	fi
done
[ "$stale" -eq 0 ] || exit 2

# defs: "symbol file" for every global symbol an object defines;
# uses: "file symbol" for every symbol it leaves undefined.
for c in "${srcs[@]}"; do
	f=${c%.c}
	o=$f.o
	nm -g --defined-only "$o" | awk -v f="$f" 'NF >= 3 { print $3, f }' >>"$tmp/defs"
	nm -u "$o" | awk -v f="$f" '{ print f, $NF }' >>"$tmp/uses"
done
touch "$tmp/defs" "$tmp/uses"

dups=$(awk '{ print $1 }' "$tmp/defs" | sort | uniq -d)
if [ -n "$dups" ]; then
	echo "check-layering: symbols defined in more than one object:" >&2
	for s in $dups; do
		echo "  $s: $(awk -v s="$s" '$1 == s { printf "%s ", $2 }' "$tmp/defs")" >&2
	done
	status=1
fi

# edges: "from to symbol" for every use of a symbol defined in another file
awk 'NR == FNR { def[$1] = $2; next }
	 ($2 in def) && def[$2] != $1 { print $1, def[$2], $2 }' \
	"$tmp/defs" "$tmp/uses" | LC_ALL=C sort -u >"$tmp/edges"

if [ "$verbose" -eq 1 ]; then
	echo "# file-level call graph (from -> to: symbols)"
	awk '{ k = $1 " -> " $2; had = (k in s); s[k] = had ? s[k] " " $3 : $3 }
		 END { for (k in s) print k ": " s[k] }' "$tmp/edges" | LC_ALL=C sort
	echo
fi

# ---- rule 1: cycles ----
# Strongly connected components (Tarjan, iterative); every component with
# more than one file holds at least one cycle.
awk '
{
	if (!($1 in id)) { id[$1] = ++n; name[n] = $1 }
	if (!($2 in id)) { id[$2] = ++n; name[n] = $2 }
	a = id[$1]; b = id[$2]
	if (!((a, b) in adj)) { adj[a, b] = 1; deg[a]++; out[a, deg[a]] = b }
	had = ((a, b) in syms)
	syms[a, b] = had ? syms[a, b] " " $3 : $3
}
END {
	idx = 0; sp = 0; ncomp = 0
	for (v = 1; v <= n; v++) {
		if (v in index_) continue
		# iterative strongconnect(v)
		cs = 1; call[cs] = v; pos[cs] = 0
		index_[v] = idx; low[v] = idx; idx++; stack[++sp] = v; onstack[v] = 1
		while (cs > 0) {
			u = call[cs]
			if (pos[cs] < deg[u]) {
				pos[cs]++
				w = out[u, pos[cs]]
				if (!(w in index_)) {
					index_[w] = idx; low[w] = idx; idx++; stack[++sp] = w; onstack[w] = 1
					call[++cs] = w; pos[cs] = 0
				} else if (onstack[w] && index_[w] < low[u])
					low[u] = index_[w]
				continue
			}
			if (low[u] == index_[u]) {
				ncomp++; size = 0
				do { w = stack[sp--]; onstack[w] = 0; comp[w] = ncomp; size++ } while (w != u)
				csize[ncomp] = size
			}
			cs--
			if (cs > 0 && low[u] < low[call[cs]]) low[call[cs]] = low[u]
		}
	}
	bad = 0
	for (c = 1; c <= ncomp; c++) {
		if (csize[c] < 2) continue
		bad++
		members = ""
		for (v = 1; v <= n; v++) if (comp[v] == c) members = members " " name[v]
		printf "cycle %d between%s:\n", bad, members
		for (a = 1; a <= n; a++) {
			if (comp[a] != c) continue
			for (i = 1; i <= deg[a]; i++) {
				b = out[a, i]
				if (comp[b] == c) printf "  %s -> %s: %s\n", name[a], name[b], syms[a, b]
			}
		}
	}
	if (bad) { printf "%d cycle(s) between files\n", bad; exit 1 }
	print "no cycles between files"
}' "$tmp/edges" || status=1

# ---- rule 2: the core never calls the PostgreSQL layer ----
up=$(awk '$1 ~ /^src\/core\// && $2 !~ /^src\/core\// { printf "  %s -> %s: %s\n", $1, $2, $3 }' "$tmp/edges")
if [ -n "$up" ]; then
	echo "src/core calls into src/pg:"
	echo "$up"
	status=1
else
	echo "src/core does not call src/pg"
fi

# ---- rule 3: no PostgreSQL header in the core ----
pg_headers='(postgres|postgres_fe|c|fmgr|funcapi|miscadmin|pgstat|pg_config|pg_config_manual|pgtime|windowapi)\.h|(access|catalog|commands|common|executor|lib|libpq|mb|nodes|optimizer|parser|port|postmaster|replication|storage|tcop|utils)/[^">]*'
hits=$(grep -rnE "^[[:space:]]*#[[:space:]]*include[[:space:]]*[<\"]($pg_headers)[\">]" src/core || true)
if [ -n "$hits" ]; then
	echo "src/core includes PostgreSQL headers:"
	echo "$hits" | sed 's/^/  /'
	status=1
else
	echo "src/core includes no PostgreSQL header"
fi

exit "$status"
