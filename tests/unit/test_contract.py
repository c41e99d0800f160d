"""What the operator writes and the bridge and the backup runner read: separate packages in
separate images, each with its own constants, checked against each other here so a drift fails.

- the token Secret, as the auth volume projects it, read by the bridge's FileTokens (file names,
  the expiry's timestamp format, grace 0);
- the bridge's environment: every variable the operator sets or reserves is one the bridge reads,
  and the bridge starts from exactly what the operator renders; its port, user and probe paths;
- the backup runner: the arguments of every container the operator renders parse with the
  runner's own parser, its credentials are the ones it scrubs, and a refused restore (its exit
  code and result line) is what the operator recognises;
- the agent id: what the CRD admits, the bridge accepts.
"""

from __future__ import annotations

import base64
import json
import re
import sqlite3
import sys
import types
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import AliasChoices, ValidationError
from vestige_backup import __main__ as runner
from vestige_backup.errors import scrub
from vestige_bridge import settings as bridge_settings
from vestige_bridge import tokens as bridge_tokens
from vestige_bridge.app import create_app
from vestige_operator import backup, tokens
from vestige_operator.api import VestigeMemorySpec
from vestige_operator.children import (
    RESERVED_BRIDGE_ENV,
    render_auth_volume,
    render_deployment,
    render_secret,
)
from vestige_operator.times import format_time
from vestige_operator.vocabulary import (
    AUTH_MOUNT,
    AUTH_VOLUME,
    BRIDGE_PORT,
    RUN_AS,
    VESTIGE_DATA_DIR,
    VESTIGE_MCP_URL,
    Images,
    Owner,
)

ROOT = Path(__file__).resolve().parents[2]
OWNER = Owner(name="agent", namespace="team", uid="u-1")
IMAGES = Images(
    vestige="example.org/vestige:3", bridge="example.org/bridge:1", litestream="example.org/litestream:0.5.18"
)
NOW = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)
S3 = {"bucket": "backups", "region": "eu-west-1", "credentialsSecret": {"name": "s3"}}
CA = {"endpoint": "https://s3.example.org", "caSecret": {"name": "ca", "key": "ca.crt"}}
BACKUP_SPEC = VestigeMemorySpec.model_validate(
    {
        "backup": {
            "schedule": "0 * * * *",
            "destination": {
                "s3": {
                    **S3,
                    "endpoint": "https://s3.example.org",
                    "caSecret": {"name": "ca", "key": "ca.crt"},
                }
            },
        }
    }
)
RESTORE_SPEC = VestigeMemorySpec.model_validate(
    {"restore": {"fromBackup": {"source": "team/old", "latest": True, "destination": {"s3": S3}}}}
)


def bridge_container(spec: VestigeMemorySpec) -> dict[str, Any]:
    pod = render_deployment(OWNER, spec, IMAGES, "hash")["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] if c["name"] == "bridge")


# -- the token Secret and the bridge ---------------------------------------------------------------


def test_token_file_names_agree() -> None:
    assert (tokens.TOKEN_KEY, tokens.PREVIOUS_KEY, tokens.PREVIOUS_EXPIRES_KEY) == (
        bridge_tokens.TOKEN_FILE,
        bridge_tokens.PREVIOUS_FILE,
        bridge_tokens.PREVIOUS_EXPIRES_FILE,
    )


def project(secret: dict[str, Any], volume: dict[str, Any], into: Path) -> None:
    """Write the files the kubelet makes of ``secret`` through the auth ``volume``."""
    for item in volume["secret"]["items"]:
        value = secret["data"].get(item["key"])
        if value is not None:
            (into / item["path"]).write_bytes(base64.b64decode(value))


@pytest.mark.parametrize("grace", [timedelta(minutes=10), timedelta(0)])
def test_the_bridge_reads_a_rotated_secret(tmp_path: Path, grace: timedelta) -> None:
    secret = render_secret(OWNER, "old-token", "internal-token")
    rotated = tokens.rotated(secret, "r1", "new-token", NOW, grace)
    project(rotated, render_auth_volume(OWNER, VestigeMemorySpec()), tmp_path)
    read = bridge_tokens.FileTokens(tmp_path).read()
    if grace:
        assert (read.current, read.previous, read.previous_expires) == (
            b"new-token",
            b"old-token",
            NOW + grace,
        )
    else:  # grace 0 revokes the old token at once: none is projected
        assert (read.current, read.previous) == (b"new-token", None)
        assert read.accepted(NOW) == [b"new-token"]
    assert b"internal-token" not in read.accepted(NOW)  # Vestige's own token is never projected
    if grace:
        assert read.accepted(NOW + grace - timedelta(seconds=1)) == [b"new-token", b"old-token"]
    assert read.accepted(NOW + grace) == [b"new-token"]  # grace 0: the old token is refused at once


def test_the_bridge_parses_the_operators_timestamps() -> None:
    for moment in (NOW, NOW + timedelta(days=7, seconds=1)):
        assert bridge_tokens.parse_time(format_time(moment)) == moment


def test_the_token_directory_is_the_auth_mount() -> None:
    container = bridge_container(VestigeMemorySpec())
    env = {e["name"]: e.get("value") for e in container["env"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert env["VESTIGE_AUTH_TOKEN_DIR"] == mounts[AUTH_VOLUME] == AUTH_MOUNT


# -- the bridge's environment, port, user and probes -----------------------------------------------


def bridge_env_names() -> set[str]:
    names = set()
    for field in bridge_settings.Settings.model_fields.values():
        alias = field.validation_alias
        names |= set(alias.choices) if isinstance(alias, AliasChoices) else {str(alias)}
    return names


def test_every_variable_the_operator_sets_or_reserves_is_read_by_the_bridge() -> None:
    read = bridge_env_names() | {"HOME"}
    for spec in (VestigeMemorySpec(), VestigeMemorySpec.model_validate({"bridge": {"allowAnonymous": True}})):
        assert {e["name"] for e in bridge_container(spec)["env"]} <= read
    assert read >= RESERVED_BRIDGE_ENV


@pytest.fixture
def bridge_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in bridge_env_names():
        monkeypatch.delenv(name, raising=False)
    yield monkeypatch


def test_the_bridge_starts_from_the_rendered_environment(
    bridge_environment: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    container = bridge_container(VestigeMemorySpec.model_validate({"agentId": "agent-7"}))
    for entry in container["env"]:
        # A secretKeyRef's value comes from the Secret at run time: any token will do here.
        bridge_environment.setenv(entry["name"], entry.get("value", "a-token"))
    settings = bridge_settings.Settings()
    settings.check_startable()
    assert settings.mcp_url == VESTIGE_MCP_URL
    assert settings.agent_id == "agent-7"
    assert settings.auth_token_dir == Path(AUTH_MOUNT) and not settings.allow_anonymous
    assert settings.upstream_token == "a-token"
    # The probes the operator renders are routes of the bridge (its token volume: tmp_path).
    (tmp_path / bridge_tokens.TOKEN_FILE).write_text("a-token")
    app = create_app(settings.model_copy(update={"auth_token_dir": tmp_path}))
    routes = {getattr(r, "path", None) for r in app.routes}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["path"] in routes
        assert container[probe]["httpGet"]["port"] == container["ports"][0]["name"]


def test_the_bridge_image_listens_on_the_port_as_the_user_the_operator_expects() -> None:
    dockerfile = (ROOT / "images" / "bridge" / "Dockerfile").read_text()
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1))  # type: ignore[union-attr]
    assert cmd[cmd.index("--port") + 1] == str(BRIDGE_PORT)
    assert re.search(r"^USER (\d+):(\d+)$", dockerfile, re.M).groups() == (str(RUN_AS), str(RUN_AS))  # type: ignore[union-attr]


# -- the backup runner -----------------------------------------------------------------------------


def rendered_runner_containers() -> dict[str, dict[str, Any]]:
    job = backup.render_backup_job("agent-20261202120000", "b-1", OWNER, BACKUP_SPEC, IMAGES)
    done = {"metadata": {"name": "agent-1"}, "status": {"key": "team/agent/agent-1.tar.gz"}}
    prune = backup.render_prune_job(OWNER, BACKUP_SPEC, IMAGES, [done])
    return {
        "backup": job["spec"]["template"]["spec"]["containers"][0],
        "prune": prune["spec"]["template"]["spec"]["containers"][0],
        "restore": backup.render_restore_init_containers(OWNER, RESTORE_SPEC, IMAGES)[0],
    }


def test_the_runner_parses_every_rendered_command() -> None:
    for command, container in rendered_runner_containers().items():
        assert container["command"][-2:] == ["-m", runner.__package__]
        args = runner.build_parser().parse_args(container["args"])
        assert args.command == command
        if command != "prune":
            assert str(args.data_dir) == VESTIGE_DATA_DIR
    restore = runner.build_parser().parse_args(rendered_runner_containers()["restore"]["args"])
    assert restore.latest and restore.prefix == "team/old/"


def test_the_runner_scrubs_the_credentials_the_operator_gives_it(monkeypatch: pytest.MonkeyPatch) -> None:
    for container in rendered_runner_containers().values():
        secrets = [e["name"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})]
        assert secrets
        for name in secrets:
            monkeypatch.setenv(name, f"value-of-{name}")
            assert f"value-of-{name}" not in scrub(f"the server said: value-of-{name}")


def test_a_refused_restore_is_what_the_operator_recognises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner refuses to restore over a store before it touches the bucket (a stand-in object
    store that fails if used: boto3 is not in this venv), with the exit code and the result line
    the operator reads from the init container's termination."""
    data = tmp_path / "vestige"
    data.mkdir()
    with sqlite3.connect(data / "vestige.db") as db:
        db.execute("create table memories (id integer)")
    objects = types.ModuleType("vestige_backup.objects")
    objects.Store = lambda *a, **k: pytest.fail("the bucket was used")  # type: ignore[attr-defined]
    objects.Target = lambda **k: pytest.fail("the bucket was used")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vestige_backup.objects", objects)
    container = rendered_runner_containers()["restore"]
    args = [*container["args"], "--result-file", str(tmp_path / "result")]
    args[args.index("--data-dir") + 1] = str(data)
    code = runner.main(args)
    assert code == runner.EXIT_REFUSED == backup.EXIT_REFUSED
    pod = {
        "status": {
            "initContainerStatuses": [
                {
                    "name": container["name"],
                    "state": {"terminated": {"exitCode": code, "message": (tmp_path / "result").read_text()}},
                }
            ]
        }
    }
    refusal = backup.restore_refusal([pod])
    assert refusal is not None and "already holds a Vestige store" in refusal


# -- the agent id ----------------------------------------------------------------------------------


@pytest.mark.parametrize("agent_id", ["a", "0", "agent-7", "a" * 63, "A", "-a", "a-", "a_b", "a" * 64, "a.b"])
def test_an_agent_id_the_crd_admits_is_one_the_bridge_serves(agent_id: str) -> None:
    try:
        VestigeMemorySpec.model_validate({"agentId": agent_id})
    except ValidationError:
        admitted = False
    else:
        admitted = True
    assert admitted == bool(bridge_settings.AGENT_ID.match(agent_id))


def test_snapshot_identity_and_key_space_agree_with_the_runner() -> None:
    """The metadata a backup run records is what a restore checks, and the key space the operator
    derives is the one the runner confines restore and prune to."""
    from vestige_backup import keys

    assert backup.METADATA_NAMESPACE == keys.METADATA_NAMESPACE
    assert backup.METADATA_AGENT_ID == keys.METADATA_AGENT_ID
    spec = VestigeMemorySpec.model_validate(
        {
            "backup": {
                "destination": {"s3": {"bucket": "bkt", "prefix": "p/", "credentialsSecret": {"name": "c"}}}
            }
        }
    )
    assert spec.backup is not None
    space = backup.key_space(spec.backup.destination, "ns", "agent")
    job = backup.render_backup_job(
        "agent-1", "uid", Owner("agent", "ns", "uid-1"), spec, Images("v", "b", "l")
    )
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    key = args[args.index("--key") + 1]
    recorded = dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "--metadata")
    assert keys.belongs(recorded, "ns", "agent") and not keys.belongs(recorded, "ns", "other")
    for candidate in (
        key,
        "p/ns/agent/x.tar.gz",
        "p/ns/agentx/y",
        "p/ns/agent/../other/z",
        "ns/agent/k",
        "p/ns/",
    ):
        assert backup.in_key_space(space, candidate) == keys.under(space, candidate), candidate
