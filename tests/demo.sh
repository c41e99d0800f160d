#!/usr/bin/env bash
# The demo command (README): installs what is missing, brings up the local control plane, runs the
# operator as a local process, applies the examples and prints `kubectl get vmem -o wide`.
# `bash tests/demo.sh down` stops the operator and the cluster.
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
exec python -m tests.demo "${1:-up}"
