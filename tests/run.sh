#!/usr/bin/env bash
# The test command (README; .ci/run calls exactly this). Installs what is missing, builds and
# caches the control plane (~/.cache/vestige-operator), runs ruff and the whole test suite.
# Extra arguments go to pytest (e.g. `bash tests/run.sh --slow -k faults`).
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
python -m tests.cluster build >/dev/null
ruff check .
ruff format --check .
# OpenClaw plugin (clients/openclaw): dependencies from the npm registry, tsc build, node's test
# runner against real bridges (needs the venv above for `python -m vestige_bridge`). Offline after npm ci.
(
  cd clients/openclaw
  npm ci --no-audit --no-fund --loglevel=error
  npm run --silent build
  VESTIGE_PYTHON="$(command -v python)" node --test test/*.test.mjs
)
# pytest exits 5 when it collected nothing: that is a failure here like any other non-zero exit.
exec python -m pytest tests "$@"
