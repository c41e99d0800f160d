#!/usr/bin/env bash
# The test command (README; .ci/run calls exactly this). Installs what is missing, builds and
# caches the control plane, the real Vestige 1.3.0/2.0.0 (only where its vendored sources are, else
# its tests skip and say so), the images and the test tools helm and kstatus
# (~/.cache/vestige-operator), runs ruff, the OpenClaw plugin's tests and the whole pytest suite.
# Extra arguments go to pytest (e.g. `bash tests/run.sh --slow -k faults`).
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
python -m tests.cluster build >/dev/null
python -m tests.vestige build --if-vendored >/dev/null
# The real node's images (tests/cluster/images.py): under a second from the cache; a cold build
# (debootstrap, pip, the real Vestige) takes minutes. Only where buildah and debootstrap exist.
if command -v buildah >/dev/null && command -v debootstrap >/dev/null; then
    python -m tests.cluster images >/dev/null
    python -m tests.cluster.netpol build >/dev/null  # kube-router's firewall for the real node
fi
python -m tests.tools build >/dev/null  # helm and the kstatus helper (Go module proxy, cached)
python -m tests.s3.build >/dev/null   # versitygw for the backup tests (cached like the cluster)
# As root (CI, the dev machines) the real node must run: its absence fails the run, not a skip.
if [ "$(id -u)" = 0 ]; then
    export VESTIGE_REQUIRE_REAL_NODE=1
fi
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
