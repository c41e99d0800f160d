#!/usr/bin/env bash
# The test command (README; .ci/run calls exactly this). Installs what is missing, builds and
# caches the control plane (~/.cache/vestige-operator), runs ruff and the whole test suite.
# Extra arguments go to pytest (e.g. `bash tests/run.sh --slow -k faults`).
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
python -m tests.cluster build >/dev/null
python -m tests.s3.build >/dev/null   # versitygw for the backup tests (cached like the cluster)
ruff check .
ruff format --check .
# pytest exits 5 when it collected nothing: that is a failure here like any other non-zero exit.
exec python -m pytest tests "$@"
