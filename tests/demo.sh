#!/usr/bin/env bash
# The demo command (README): installs what is missing, brings up the local control plane and the
# real node, runs the operator as a local process, applies the examples with the real Vestige and
# prints, per agent, which Vestige runs where, a port-forward and the commands that use it.
# `bash tests/demo.sh tour`: day two (rotate a token, back up, restore, suspend and resume).
# `bash tests/demo.sh stop`: the demo's operator, port-forwards, namespace and volumes go.
# `bash tests/demo.sh down`: stop, then stop the cluster.
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
exec python -m tests.demo "${1:-up}"
