"""`python -m tests.cluster up | down | status | build | images | restart <component>`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

from tests.cluster import build, images, launcher


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    u = sub.add_parser("up", help="build what is missing, start the cluster, print `export KUBECONFIG=...`")
    u.add_argument(
        "--node",
        choices=launcher.NODE_MODES,
        default=None,
        help="kwok (simulated), real (kubelet + containerd) or both; default: both where the real "
        "node can run (root, Debian packages), else kwok (env VESTIGE_CLUSTER_NODE)",
    )
    sub.add_parser("down", help="stop every process `up` started and remove the cluster state")
    sub.add_parser("status", help="print the state of each component as JSON")
    sub.add_parser("build", help="only build (or check the cache of) the binaries")
    i = sub.add_parser(
        "images", help="build (or check the cache of) the node's images; print their refs as JSON"
    )
    i.add_argument("--import", dest="address", help="also import them into the containerd at this socket")
    i.add_argument("--no-vestige", action="store_true", help="skip the real Vestige images (no cargo build)")
    r = sub.add_parser("restart", help="restart one component (fault tests)")
    r.add_argument("component", choices=launcher.ALL_COMPONENTS)
    args = parser.parse_args(argv)

    try:
        if args.command == "up":
            started = time.monotonic()
            st = launcher.up(node_kind=args.node)
            why = f" ({st.node_reason})" if st.node_reason else ""
            print(
                f"[cluster] {st.version} up on {st.server}, nodes: {st.node}{why}"
                f" ({time.monotonic() - started:.1f}s)",
                file=sys.stderr,
            )
            print(f"export KUBECONFIG={st.kubeconfig}")
        elif args.command == "down":
            launcher.down()
            print("[cluster] down", file=sys.stderr)
        elif args.command == "status":
            info = launcher.status()
            print(json.dumps(info, indent=2))
            return 0 if info.get("up") else 1
        elif args.command == "build":
            print(build.ensure_binaries())
        elif args.command == "images":
            versions = () if args.no_vestige else None
            if not args.no_vestige and (why := images.vestige_unavailable()):
                print(f"[images] skipping the Vestige images: {why}", file=sys.stderr)
            built = images.ensure_images(vestige_versions=versions)
            if args.address:
                for ref in images.import_into(args.address, images=built):
                    print(f"[images] imported {ref}", file=sys.stderr)
            print(json.dumps(dataclasses.asdict(built.refs), indent=2))
        elif args.command == "restart":
            launcher.restart(args.component)
    except (launcher.ClusterError, build.BuildError, images.ImageError) as exc:
        print(f"[cluster] error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
