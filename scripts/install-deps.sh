#!/usr/bin/env bash
# Install everything transfer needs on Debian 12, from Debian's archive only.
#   scripts/install-deps.sh          build + test dependencies (incl. python3-torch, the oracle)
#   scripts/install-deps.sh --min    build + run only
set -euo pipefail

pkgs=(build-essential postgresql-15 postgresql-server-dev-15
      libopenblas-dev libjpeg62-turbo-dev libpng-dev zlib1g-dev
      curl unzip ca-certificates)	# the demo downloads the dataset when it is not beside the checkout
if [ "${1:-}" != "--min" ]; then
	pkgs+=(postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl
	       python3 python3-torch python3-torchvision python3-pil python3-numpy
	       clang libclang-rt-14-dev)
fi

sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "== installing: ${missing[*]}"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts a default cluster on install; the project uses its own throwaway clusters.
echo "== dependencies installed"
