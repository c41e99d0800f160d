"""Pure parts of the kubectl plugin: ages, image tags, summaries, tables, commands."""

from __future__ import annotations

import json
import shlex
from datetime import UTC, datetime, timedelta

import pytest
from vestige_operator.cluster import SECRET, VESTIGE_MEMORY
from vestige_operator.kubectl import render
from vestige_operator.kubectl.cli import build_parser
from vestige_operator.kubectl.kube import Forbidden, NotFound, PluginError, api_error
from vestige_operator.times import format_time

NOW = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)


def ago(**kw: float) -> str:
    return format_time(NOW - timedelta(**kw))


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (59, "59s"),
        (119, "119s"),
        (120, "2m"),
        (150, "2m30s"),
        (600, "10m"),
        (179 * 60, "179m"),
        (3 * 3600 + 600, "3h10m"),
        (8 * 3600, "8h"),
        (47 * 3600, "47h"),
        (3 * 86400, "3d"),
        (800 * 86400, "2y"),
        (-5, "0s"),
    ],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert render.human_duration(seconds) == text


def test_age() -> None:
    assert render.age(ago(minutes=5), NOW) == "5m"
    assert render.age(None, NOW) == "-"
    assert render.age("not a time", NOW) == "-"
    assert render.age("2026-12-02T12:00:00+01:00", NOW) == "60m"


@pytest.mark.parametrize(
    ("image", "version"),
    [
        ("ghcr.io/vestige-operator/vestige:3", "3"),
        ("example.org/vestige:3.1.1", "3.1.1"),
        ("registry:5000/vestige", "latest"),
        ("registry:5000/vestige:2.0.0", "2.0.0"),
        ("vestige@sha256:0123456789abcdef0123", "sha256:0123456789ab"),
        ("vestige:3.1@sha256:0123456789abcdef", "3.1"),
        (None, None),
        ("", None),
    ],
)
def test_image_version(image: str | None, version: str | None) -> None:
    assert render.image_version(image) == version


def memory(**status: object) -> dict[str, object]:
    return {
        "metadata": {"name": "my-agent", "namespace": "agents", "creationTimestamp": ago(hours=5)},
        "spec": {"storage": {"size": "5Gi"}, "vestige": {"image": "example.org/vestige:3.0.0"}},
        "status": {
            "phase": "Ready",
            "agentId": "agent-7",
            "endpoint": "http://my-agent.agents.svc:8000",
            "storage": {"capacity": "5Gi"},
            "pvcName": "my-agent-data",
            "conditions": [{"type": "Ready", "status": "True", "reason": "Ready"}],
            **status,
        },
    }


def test_summary_prefers_status_version_then_deployment_then_spec() -> None:
    assert (
        render.summarize(memory(vestigeVersion="3.1.1"), NOW, deployment_image="x:9")["vestigeVersion"]
        == "3.1.1"
    )
    assert render.summarize(memory(), NOW, deployment_image="x:9")["vestigeVersion"] == "9"
    assert render.summarize(memory(), NOW)["vestigeVersion"] == "3.0.0"
    bare = memory()
    bare["spec"] = {}
    assert render.summarize(bare, NOW)["vestigeVersion"] is None


def test_summary_fields() -> None:
    s = render.summarize(memory(backup={"lastSuccessful": ago(hours=3)}, tokenRotatedAt=ago(minutes=1)), NOW)
    assert s["phase"] == "Ready" and s["ready"] == "True" and s["agentId"] == "agent-7"
    assert s["storage"] == {"requested": "5Gi", "actual": "5Gi", "pvc": "my-agent-data"}
    assert s["lastBackup"] == ago(hours=3)
    assert s["age"] == "5h"
    assert render.age(ago(hours=2), NOW) == "120m"  # as kubectl: minutes below 3 h
    assert s["tokenSecret"] == {"name": "my-agent-auth", "key": "token"}
    assert s["tokenRotatedAt"] == ago(minutes=1)
    json.dumps(s)  # serializable for -o json


def test_token_ref_order() -> None:
    m = memory(authSecretRef={"name": "from-status", "key": "k1"})
    m["spec"]["auth"] = {"existingSecret": {"name": "from-spec", "key": "k2"}}  # type: ignore[index]
    assert render.token_ref(m) == ("from-status", "k1")
    del m["status"]["authSecretRef"]  # type: ignore[attr-defined]
    assert render.token_ref(m) == ("from-spec", "k2")
    del m["spec"]["auth"]  # type: ignore[attr-defined]
    assert render.token_ref(m) == ("my-agent-auth", "token")


def test_list_table_alignment_and_namespace_column() -> None:
    pending = memory()
    pending["metadata"] = {"name": "b", "namespace": "other", "creationTimestamp": ago(seconds=30)}
    pending["status"] = {"phase": "Pending"}
    summaries = [
        render.summarize(memory(backup={"lastSuccessful": ago(hours=3)}), NOW),
        render.summarize(pending, NOW),
    ]
    text = render.list_table(summaries, NOW, with_namespace=True)
    lines = text.splitlines()
    assert lines[0].split() == [
        "NAMESPACE",
        "NAME",
        "AGENT",
        "PHASE",
        "READY",
        "ENDPOINT",
        "STORAGE",
        "VESTIGE",
        "LAST",
        "BACKUP",
        "REPLICATED",
        "AGE",
    ]
    assert lines[1].split() == [
        "agents",
        "my-agent",
        "agent-7",
        "Ready",
        "True",
        "http://my-agent.agents.svc:8000",
        "5Gi/5Gi",
        "3.0.0",
        "3h",
        "-",
        "5h",
    ]
    assert lines[2].split() == ["other", "b", "b", "Pending", "-", "-", "5Gi/-", "3.0.0", "-", "-", "30s"]
    # columns line up: every row's PHASE cell starts at the header's PHASE offset
    col = lines[0].index("PHASE")
    assert lines[1][col:].startswith("Ready") and lines[2][col:].startswith("Pending")
    assert all(line == line.rstrip() for line in lines)
    assert "NAMESPACE" not in render.list_table(summaries, NOW, with_namespace=False)


def test_describe_shows_conditions_and_events() -> None:
    m = memory(tokenRotatedAt=ago(minutes=3))
    conditions = [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Ready",
            "lastTransitionTime": ago(minutes=4),
            "message": "ok",
        },
        {"type": "Stalled", "status": "False", "reason": "", "message": "a\nmulti   line"},
    ]
    events = render.recent_events(
        [
            {
                "type": "Normal",
                "reason": "Old",
                "involvedObject": {"kind": "VestigeMemory", "name": "my-agent"},
                "lastTimestamp": ago(minutes=9),
                "message": "older",
            },
            {
                "type": "Warning",
                "reason": "New",
                "involvedObject": {"kind": "Pod", "name": "my-agent-x"},
                "eventTime": ago(minutes=1),
                "message": "newer",
            },
        ]
    )
    assert [e["reason"] for e in events] == ["Old", "New"]
    text = render.describe(render.summarize(m, NOW), conditions, events, NOW)
    assert "Agent ID:" in text and "agent-7" in text
    assert "rotated " + ago(minutes=3) in text
    assert "a multi line" in text  # one line per condition
    assert "Pod/my-agent-x" in text and "9m" in text
    noted = render.describe(render.summarize(m, NOW), [], None, NOW, events_note="events not shown: x")
    assert "<events not shown: x>" in noted and "<none>" in noted


def test_recent_events_keeps_the_latest() -> None:
    events = [{"reason": str(i), "lastTimestamp": ago(minutes=30 - i)} for i in range(30)]
    kept = render.recent_events(events, limit=10)
    assert [e["reason"] for e in kept] == [str(i) for i in range(20, 30)]


def test_port_forward_command_passes_the_users_flags() -> None:
    flags = render.KubeFlags(kubeconfig="/k/config", context="prod", user="alice", group="ops")
    argv = render.port_forward_command("/bin/kubectl", flags, "agents", "my-agent-abc", None)
    assert argv == [
        "/bin/kubectl",
        "--kubeconfig=/k/config",
        "--context=prod",
        "--as=alice",
        "--as-group=ops",
        "port-forward",
        "--namespace=agents",
        "--address=127.0.0.1",
        "pod/my-agent-abc",
        ":8000",
    ]
    assert render.port_forward_command("kubectl", render.KubeFlags(), "n", "p", 18000)[-1] == "18000:8000"


def test_forwarded_port() -> None:
    assert render.forwarded_port("Forwarding from 127.0.0.1:43121 -> 8000\n") == 43121
    assert render.forwarded_port("Forwarding from [::1]:43121 -> 8000") is None
    assert render.forwarded_port("Handling connection for 43121") is None


def test_connect_info_curl_and_openclaw_config() -> None:
    flags = render.KubeFlags(kubeconfig="/tmp/my config")
    text = render.connect_info(
        name="my-agent",
        namespace="agents",
        pod="my-agent-abc",
        local_port=41000,
        agent_id="agent-7",
        token="s3cr3t",
        flags=flags,
    )
    config_text = text.split("OpenClaw plugin config:\n", 1)[1]
    config = json.loads(config_text)
    assert config == {
        "serverUrl": "http://127.0.0.1:41000",
        "authToken": "s3cr3t",
        "timeoutMs": 30000,
        "agentId": "agent-7",
    }
    curl = next(
        line.strip() for line in text.splitlines() if line.strip().startswith("curl") and "/search" in line
    )
    argv = shlex.split(curl)
    assert argv[-1] == "http://127.0.0.1:41000/search"
    assert (
        "Authorization: Bearer $(kubectl vestige token my-agent -n agents '--kubeconfig=/tmp/my config')"
        in argv
    )
    assert json.loads(argv[argv.index("-d") + 1]) == {"query": "hello", "limit": 5}
    assert "s3cr3t" not in text.split("OpenClaw plugin config:")[0]  # the curl lines never hold the token
    hidden = render.connect_info(
        name="my-agent",
        namespace="agents",
        pod="p",
        local_port=1,
        agent_id="a",
        token=None,
        flags=render.KubeFlags(),
    )
    assert json.loads(hidden.split("OpenClaw plugin config:\n", 1)[1])["authToken"].startswith(
        "<the output of: "
    )


VMEM = VESTIGE_MEMORY


def test_api_errors_are_one_clear_line() -> None:
    body = json.dumps(
        {
            "kind": "Status",
            "reason": "NotFound",
            "details": {"name": "x", "kind": "vestigememories"},
            "message": 'vestigememories.vestige.dev "x" not found',
        }
    ).encode()
    err = api_error(404, body, verb="get", resource=VMEM, namespace="ns", name="x")
    assert isinstance(err, NotFound) and err.message == 'VestigeMemory "x" not found in namespace "ns"'
    crd_missing = api_error(404, b"404 page not found", verb="list", resource=VMEM, namespace="ns", name=None)
    assert "is the VestigeMemory CRD installed?" in crd_missing.message
    forbidden = json.dumps(
        {
            "reason": "Forbidden",
            "message": 'secrets "x-auth" is forbidden: User "bob" cannot get resource "secrets" '
            'in API group "" in the namespace "ns"',
        }
    ).encode()
    err = api_error(
        403,
        forbidden,
        verb="get",
        resource=SECRET,
        namespace="ns",
        name="x-auth",
    )
    assert isinstance(err, Forbidden)
    assert err.message == (
        'not allowed to get Secret "x-auth" in namespace "ns": User "bob" cannot get resource "secrets" in '
        'API group "" in the namespace "ns"'
    )
    assert "\n" not in err.message
    other = api_error(500, b"boom", verb="patch", resource=VMEM, namespace="ns", name="x")
    assert type(other) is PluginError and "HTTP 500" in other.message


def test_parser_accepts_flags_before_and_after_the_command() -> None:
    parser = build_parser()
    a = parser.parse_args(["-n", "agents", "--context", "c", "status", "x"])
    assert (a.namespace, a.context, a.name) == ("agents", "c", "x")
    b = parser.parse_args(["status", "x", "-n", "agents", "-o", "yaml"])
    assert (b.namespace, b.output, b.context) == ("agents", "yaml", None)
    c = parser.parse_args(["rotate-token", "x", "--grace", "1h30m", "--wait", "--timeout", "90s"])
    assert (c.grace, c.wait, c.timeout) == ("1h30m", True, 90)
    assert parser.parse_args(["rotate-token", "x"]).grace == "10m"
    assert parser.parse_args(["rotate-token", "x", "--grace", "0"]).grace == "0"
    assert parser.parse_args(["rotate-token", "x", "--grace", "168h"]).grace == "168h"
    for bad in ("10 minutes", "+5m", "-1m", "200h", ""):
        with pytest.raises(SystemExit) as exc:
            parser.parse_args(["rotate-token", "x", "--grace", bad])
        assert exc.value.code == 2
    with pytest.raises(SystemExit):
        parser.parse_args(["logs", "x", "-c", "sidecar"])


def test_plugin_imports_neither_the_bridge_nor_kopf() -> None:
    """The plugin runs from a plain `pip install vestige-operator` (no bridge extra) and starts fast."""
    import subprocess
    import sys

    code = (
        "import sys, vestige_operator.kubectl.cli; "
        "heavy = ('fastapi', 'mcp', 'uvicorn', 'httpx', 'vestige_bridge', 'kopf'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_replicated_cell_says_how_long_ago_and_why_not_when_unhealthy() -> None:
    def with_replication(status: str, reason: str, when: str | None) -> dict[str, object]:
        m = memory(replication={"lastReplicatedAt": when, "lagSeconds": 1} if when else None)
        m["status"]["conditions"].append(  # type: ignore[index]
            {"type": "ReplicationHealthy", "status": status, "reason": reason}
        )
        return m

    healthy = render.summarize(with_replication("True", "Replicating", ago(seconds=4)), NOW)
    assert healthy["replication"] == {
        "healthy": "True",
        "reason": "Replicating",
        "lastReplicatedAt": ago(seconds=4),
        "lagSeconds": 1,
    }
    assert render.list_row(healthy, NOW, with_namespace=False)[8] == "4s"
    late = render.summarize(with_replication("False", "Lagging", ago(minutes=5)), NOW)
    assert render.list_row(late, NOW, with_namespace=False)[8] == "5m (Lagging)"
    never = render.summarize(with_replication("False", "NotReplicating", None), NOW)
    assert render.list_row(never, NOW, with_namespace=False)[8] == "never (NotReplicating)"
    assert render.summarize(memory(), NOW)["replication"] is None
