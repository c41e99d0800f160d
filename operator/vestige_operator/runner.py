"""``vestige-operator run``: command-line flags, logging, and the kopf operator loop.

Flags override the ``VESTIGE_*`` environment (see ``config.py`` and docs/operator.md). The
operator watches the namespaces given with ``--namespace`` (repeatable) or ``VESTIGE_NAMESPACES``,
or every namespace with ``--all-namespaces``; with neither it refuses to start.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys

import kopf

from vestige_operator import __version__, metrics
from vestige_operator.cluster import Cluster, make_api_client
from vestige_operator.config import ConfigError, OperatorConfig
from vestige_operator.handlers import NoMemories, configure_settings, register
from vestige_operator.leader import Elector, Leadership, candidate_identity
from vestige_operator.reconcile import Reconciler

logger = logging.getLogger("vestige_operator")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``run`` (each overrides its environment variable)."""
    parser.add_argument(
        "-n",
        "--namespace",
        dest="namespaces",
        action="append",
        default=None,
        metavar="NS",
        help="namespace to watch; repeat for several (env VESTIGE_NAMESPACES, comma-separated)",
    )
    parser.add_argument(
        "-A",
        "--all-namespaces",
        action="store_true",
        default=None,
        help="watch every namespace (env VESTIGE_ALL_NAMESPACES=true)",
    )
    parser.add_argument(
        "--resync-seconds",
        type=float,
        default=None,
        help="interval of the drift-correcting resync (env VESTIGE_RESYNC_SECONDS, default 60)",
    )
    parser.add_argument(
        "--vestige-image", default=None, help="default Vestige image (env VESTIGE_DEFAULT_IMAGE)"
    )
    parser.add_argument(
        "--bridge-image", default=None, help="default bridge image (env VESTIGE_BRIDGE_IMAGE)"
    )
    parser.add_argument(
        "--litestream-image",
        default=None,
        help="image of the continuous-backup sidecar (env VESTIGE_LITESTREAM_IMAGE)",
    )
    parser.add_argument(
        "--log-format", choices=("json", "plain"), default=None, help="log format (env VESTIGE_LOG_FORMAT)"
    )
    parser.add_argument(
        "--log-level",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        default=None,
        help="log level (env VESTIGE_LOG_LEVEL, default INFO)",
    )
    parser.add_argument(
        "--liveness",
        default=None,
        metavar="URL",
        help="liveness endpoint, e.g. http://0.0.0.0:8081/healthz; empty to disable "
        "(env VESTIGE_LIVENESS_ENDPOINT)",
    )
    parser.add_argument(
        "--kubeconfig", default=None, help="kubeconfig file (default: in-cluster, else $KUBECONFIG)"
    )


def config_from_args(args: argparse.Namespace, env: dict[str, str] | None = None) -> OperatorConfig:
    """The environment's settings with the flags given on the command line applied."""
    config = OperatorConfig.from_env(env)
    overrides: dict[str, object] = {}
    if args.namespaces:
        overrides["namespaces"] = tuple(
            dict.fromkeys(ns for arg in args.namespaces for ns in arg.split(",") if ns)
        )
    if args.all_namespaces:
        overrides["all_namespaces"] = True
    if args.resync_seconds is not None:
        if not args.resync_seconds > 0:
            raise ConfigError("--resync-seconds must be greater than zero")
        overrides["resync_seconds"] = args.resync_seconds
    if args.vestige_image:
        overrides["default_vestige_image"] = args.vestige_image
    if args.bridge_image:
        overrides["default_bridge_image"] = args.bridge_image
    if args.litestream_image:
        overrides["default_litestream_image"] = args.litestream_image
    if args.log_format:
        overrides["log_format"] = args.log_format
    if args.log_level:
        overrides["log_level"] = args.log_level
    if args.liveness is not None:
        overrides["liveness_endpoint"] = args.liveness.strip()
    config = config.replace(**overrides)
    if config.all_namespaces and config.namespaces:
        raise ConfigError("give either --all-namespaces or --namespace, not both")
    if not config.all_namespaces and not config.namespaces:
        raise ConfigError("nothing to watch: give --namespace NS (repeatable) or --all-namespaces")
    return config


def configure_logging(config: OperatorConfig) -> None:
    fmt = kopf.LogFormat.JSON if config.log_format == "json" else kopf.LogFormat.FULL
    kopf.configure(
        debug=config.log_level == "DEBUG",
        quiet=config.log_level in ("WARNING", "ERROR"),
        log_format=fmt,
        log_refkey="k8s",
    )
    logging.getLogger().setLevel(config.log_level)
    # The client's connection pool is chatty at DEBUG and warns about every retry.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    if config.log_level != "DEBUG":
        # kopf logs "Handler ... succeeded" for every watch event and every liveness probe:
        # thousands of lines per resync with many resources. Problems are still logged.
        for name in ("kopf.objects", "kopf.activities.probe", "aiohttp.access"):
            logging.getLogger(name).setLevel(logging.WARNING)


def run(args: argparse.Namespace) -> int:
    """Run the operator until SIGINT/SIGTERM; the process exit code."""
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"vestige-operator: {exc}", file=sys.stderr)
        return 2
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig  # kopf's login reads it too
    configure_logging(config)

    try:
        api_client = make_api_client(args.kubeconfig)
    except Exception as exc:
        logger.error("cannot configure the Kubernetes client: %s", exc)
        return 1
    lease_namespace = config.lease_namespace_in()
    elect = config.leader_election == "on" or (config.leader_election == "auto" and bool(lease_namespace))
    if elect and not lease_namespace:
        logger.error("leader election needs VESTIGE_LEASE_NAMESPACE (or POD_NAMESPACE in a pod)")
        return 2
    leadership = Leadership(
        elect=elect, renew_deadline=config.lease_renew_deadline_seconds, identity=candidate_identity()
    )
    cluster = Cluster(
        api_client, max_workers=config.max_concurrent_reconciles, may_write=lambda: leadership.leading
    )
    # The election has its own connections: a pool busy with passes must not delay a renewal.
    elector = None
    if elect:
        elector = Elector(leadership, config, lease_namespace, make_api_client(args.kubeconfig))
    reconciler = Reconciler(cluster, config)
    registry = kopf.OperatorRegistry()
    settings = kopf.OperatorSettings()
    configure_settings(settings)
    caches = register(registry, reconciler, leadership=leadership, elector=elector, settings=settings)
    metrics.install(registry, reconciler, config, leadership, owners=caches.owners)

    scope = "all namespaces" if config.all_namespaces else ", ".join(config.namespaces)
    logger.info(
        "vestige-operator %s watching %s (resync %ss, vestige %s, bridge %s); %s",
        __version__,
        scope,
        config.resync_seconds,
        config.default_vestige_image,
        config.default_bridge_image,
        f"leader election: Lease {lease_namespace}/{config.lease_name} as {leadership.identity} "
        f"(duration {config.lease_duration_seconds}s, renew deadline "
        f"{config.lease_renew_deadline_seconds}s, retry {config.lease_retry_period_seconds}s)"
        if elect
        else "no leader election (leads alone)",
    )
    try:
        kopf.run(
            registry=registry,
            settings=settings,
            standalone=True,
            clusterwide=config.all_namespaces,
            namespaces=config.namespaces,
            liveness_endpoint=config.liveness_endpoint or None,
            identity=own_identity(),
            memories=NoMemories(),
        )
    except Exception:
        logger.exception("the operator stopped on an error")
        return 1
    return 0


def own_identity() -> str:
    """kopf's identity (``user@host``) without ``getpass.getuser()``: in a pod the uid (1000) has
    no passwd entry and kopf's own detection raises ``KeyError`` before the operator starts."""
    user = os.environ.get("USER") or os.environ.get("LOGNAME") or f"uid-{os.getuid()}"
    return f"{user}@{socket.gethostname()}"
