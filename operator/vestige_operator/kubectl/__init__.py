"""``kubectl vestige``: a kubectl plugin to operate VestigeMemory agents (console script
``kubectl-vestige``; needs only the operator's own dependencies, not the bridge extra)."""
