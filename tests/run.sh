#!/usr/bin/env bash
# The test command (README; .ci/run calls exactly this). Installs what is missing, builds and
# caches the control plane, the real Vestige 1.3.0/2.0.0 (only where its vendored sources are, else
# its tests skip and say so), the images and the test tools (~/.cache/vestige-operator), runs ruff,
# the OpenClaw plugin's tests and the whole pytest suite.
# Extra arguments go to pytest (e.g. `bash tests/run.sh --slow -k faults`).
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
# Every build (control plane, real node, real Vestige, images, helm/kstatus, versitygw,
# kube-router, the OpenClaw plugin's npm ci + tsc), cached under ~/.cache/vestige-operator, in
# parallel lanes; prints each step's time (tests/prepare.py).
python -m tests.prepare
# As root (CI, the dev machines) the real node must run: its absence fails the run, not a skip.
if [ "$(id -u)" = 0 ]; then
    export VESTIGE_REQUIRE_REAL_NODE=1
fi
ruff check .
ruff format --check .
# OpenClaw plugin (clients/openclaw, built above): node's test runner against real bridges
# (needs the venv above for `python -m vestige_bridge`). Offline after npm ci.
(
  cd clients/openclaw
  VESTIGE_PYTHON="$(command -v python)" node --test test/*.test.mjs
)
# pytest exits 5 when it collected nothing: that is a failure here like any other non-zero exit.
exec python -m pytest tests --durations=25 "$@"
