#!/usr/bin/env bash
# The test command (README; .ci/run calls exactly this). Installs what is missing, builds and
# caches the control plane and the real Vestige 1.3.0/2.0.0 (~/.cache/vestige-operator; Vestige
# only where its vendored sources are, else its tests skip and say so), runs ruff and the suite.
# Extra arguments go to pytest (e.g. `bash tests/run.sh --slow -k faults`).
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
python -m tests.cluster build >/dev/null
python -m tests.vestige build --if-vendored >/dev/null
ruff check .
ruff format --check .
# pytest exits 5 when it collected nothing: that is a failure here like any other non-zero exit.
exec python -m pytest tests "$@"
