"""``python -m vestige_operator.kubectl`` = ``kubectl-vestige``."""

from vestige_operator.kubectl.cli import run

if __name__ == "__main__":
    run()
