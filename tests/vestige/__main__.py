"""`python -m tests.vestige build [--version 1.3.0|2.0.0|all]`: build (or reuse) the real Vestige."""

from __future__ import annotations

import argparse
import sys

from tests.vestige import build


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.vestige", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build what is missing; print one `<version> <binary>` line each")
    b.add_argument("--version", choices=[*build.VERSIONS, "all"], default="all")
    b.add_argument(
        "--if-vendored",
        action="store_true",
        help="exit 0 with a note when the vendor directory is missing (tests then skip)",
    )
    args = parser.parse_args(argv)
    if build.vendor_dir() is None:
        print(f"[vestige] {build.missing_reason()}", file=sys.stderr)
        return 0 if args.if_vendored else 1
    versions = build.VERSIONS if args.version == "all" else (args.version,)
    try:
        for v in versions:
            print(f"{v} {build.ensure(v)}")
    except build.BuildError as exc:
        print(f"[vestige] error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
