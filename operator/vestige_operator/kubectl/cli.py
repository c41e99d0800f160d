"""``kubectl vestige``: the command line (argparse) and its error handling.

Exit codes: 0 success, 1 a failure (one line on stderr: missing resource, no permission,
unreachable cluster, a failed backup, a timeout), 2 bad usage (argparse, an invalid duration).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType

from vestige_operator import __version__
from vestige_operator.kubectl import commands, render
from vestige_operator.kubectl.kube import Kube, PluginError, connect
from vestige_operator.times import format_duration, parse_duration
from vestige_operator.tokens import DEFAULT_GRACE, MAX_GRACE

PROG = "kubectl vestige"


def _connection_flags(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """kubectl's connection flags; on subcommands their default is SUPPRESS so a flag given
    before the subcommand is not overwritten by the subcommand's default."""
    d = {"default": argparse.SUPPRESS} if suppress else {"default": None}
    g = parser.add_argument_group("connection (as kubectl)")
    g.add_argument(
        "--kubeconfig", help="path to the kubeconfig file (default: $KUBECONFIG, ~/.kube/config)", **d
    )
    g.add_argument("--context", help="kubeconfig context to use", **d)
    g.add_argument("-n", "--namespace", help="namespace (default: the context's namespace)", **d)
    g.add_argument("--as", dest="as_user", metavar="USER", help="impersonate this user", **d)
    g.add_argument("--as-group", dest="as_group", metavar="GROUP", help="impersonate this group", **d)


def _timeout(value: str) -> float:
    try:
        return parse_duration(value).total_seconds()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _grace(value: str) -> str:
    """Checked here with the operator's parser and bound; passed on as written (the operator
    parses the annotation with the same function)."""
    try:
        commands.parse_grace(value)
    except PluginError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None
    return value.strip()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Operate Vestige agent memories (VestigeMemory resources) from the terminal.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _connection_flags(parser, suppress=False)
    subs = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def sub(name: str, func: Callable[..., int], help_: str) -> argparse.ArgumentParser:
        p = subs.add_parser(name, help=help_, description=help_)
        _connection_flags(p, suppress=True)
        p.set_defaults(func=func)
        return p

    p = sub("status", commands.cmd_status, "Summary of one or all VestigeMemory resources.")
    p.add_argument(
        "name", nargs="?", metavar="NAME", help="one resource: also its conditions and recent events"
    )
    p.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    p.add_argument("-o", "--output", choices=("json", "yaml"), help="machine-readable output")

    p = sub("token", commands.cmd_token, "Print the agent's bearer token (nothing else on stdout).")
    p.add_argument("name", metavar="NAME")

    p = sub(
        "connect",
        commands.cmd_connect,
        "Port-forward the agent's bridge to 127.0.0.1, print a curl and the OpenClaw config; Ctrl-C ends it.",
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("--port", type=int, default=None, help="local port (default: a free one)")
    p.add_argument(
        "--no-token",
        action="store_true",
        help="do not read or print the token (the OpenClaw config gets a placeholder)",
    )

    p = sub(
        "rotate-token",
        commands.cmd_rotate_token,
        "Ask the operator for a new token; the previous one stays valid for the grace period.",
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "--grace",
        type=_grace,
        default=format_duration(DEFAULT_GRACE),
        help=f"Go duration, 0 revokes the old token at once, at most {format_duration(MAX_GRACE)} "
        f"(default {format_duration(DEFAULT_GRACE)})",
    )
    p.add_argument("--wait", action="store_true", help="wait until status.tokenRotatedAt changes")
    p.add_argument("--timeout", type=_timeout, default=120.0, help="with --wait: Go duration (default 2m)")

    p = sub("suspend", commands.cmd_suspend, "Scale the agent to zero (data and token are kept).")
    p.add_argument("name", metavar="NAME")
    p = sub("resume", commands.cmd_resume, "Undo suspend.")
    p.add_argument("name", metavar="NAME")

    p = sub("logs", commands.cmd_logs, "Print the logs of a container of the agent's pod.")
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "-c", "--container", choices=("bridge", "vestige"), default="bridge", help="default: bridge"
    )
    p.add_argument("-f", "--follow", action="store_true", help="stream new lines until Ctrl-C")
    p.add_argument("--tail", type=int, default=None, help="only the last N lines")
    p.add_argument("-p", "--previous", action="store_true", help="the previous (crashed) container")

    p = sub("backup", commands.cmd_backup, "Create a VestigeBackup of the agent's memory.")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--wait", action="store_true", help="wait for the backup to complete or fail")
    p.add_argument("--timeout", type=_timeout, default=1800.0, help="with --wait: Go duration (default 30m)")

    p = sub(
        "restore",
        commands.cmd_restore,
        "Create a NEW agent memory from the backups of another (a moment of its replica, or a snapshot).",
    )
    p.add_argument("name", metavar="NEW", help="name of the new VestigeMemory (in this namespace)")
    p.add_argument(
        "--from", dest="source", required=True, metavar="[NAMESPACE/]NAME", help="the source VestigeMemory"
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("--at", metavar="RFC3339|latest", help="a moment of the source's continuous replica")
    which.add_argument("--snapshot", metavar="KEY|latest", help="a snapshot's object key (default: latest)")
    return parser


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    flags = render.KubeFlags(
        kubeconfig=args.kubeconfig, context=args.context, user=args.as_user, group=args.as_group
    )
    signal.signal(signal.SIGTERM, _terminate)  # `kill` ends connect/logs -f as cleanly as Ctrl-C
    kube = None
    try:
        conn = connect(flags)
        kube = Kube(conn)
        ctx = commands.Context(kube=kube, namespace=args.namespace or conn.namespace, flags=flags)
        return int(args.func(ctx, args))
    except PluginError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `kubectl vestige logs NAME | head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    finally:
        if kube is not None:
            kube.close()


def run() -> None:
    """The console script ``kubectl-vestige``."""
    sys.exit(main())
