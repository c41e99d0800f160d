"""Command line: ``python -m vestige_operator run | crd | version``."""

from __future__ import annotations

import argparse
import sys

from vestige_operator import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vestige-operator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run_parser = sub.add_parser("run", help="run the operator (kopf) against the current kubeconfig")
    from vestige_operator import runner

    runner.add_arguments(run_parser)
    sub.add_parser("crd", help="print every CRD the operator serves (multi-document YAML)")
    sub.add_parser("version", help="print the operator version")

    args = parser.parse_args(argv)
    if args.command == "crd":
        from vestige_operator.crd import all_crds_yaml

        sys.stdout.write(all_crds_yaml())
        return 0
    if args.command == "version":
        print(__version__)
        return 0
    return runner.run(args)


if __name__ == "__main__":
    sys.exit(main())
