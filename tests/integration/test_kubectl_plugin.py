"""`kubectl vestige` (the console script ``kubectl-vestige``) against the real local control plane.

Every command runs as the installed executable in a subprocess, as a user would run it (through
``kubectl`` itself in ``test_kubectl_finds_the_plugin``). Pods do not run on the kwok node, so
``connect`` and ``logs`` are tested here up to the pod (errors, command construction, Ctrl-C);
``run_connect`` is the helper the real-node tests use to call a running bridge through the
forward (``tests/node/test_day_two.py``: connect, logs, rotate-token in a real pod).
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from vestige_operator import tokens
from vestige_operator.backup import backup_manifest
from vestige_operator.vocabulary import Owner

from tests import cluster
from tests.integration import operator_fixtures
from tests.integration.conftest import ROOT, Kubectl
from tests.integration.helpers import get, must_get, wait_until
from tests.integration.operator_fixtures import OperatorProcess, free_port

operator_factory = operator_fixtures.operator_factory
operator_process = operator_fixtures.operator_process

pytestmark = pytest.mark.timeout(300)

PLUGIN = Path(sys.executable).parent / "kubectl-vestige"
BACKUP_CRD = "vestigebackups.vestige.dev"
BACKUP_CRD_FILE = ROOT / "crds" / "vestige.dev_vestigebackups.yaml"
VIEWER = "vestige-viewer"  # impersonated user with the Role below only


# -- running the plugin -------------------------------------------------------------------------


def plugin_env(kubeconfig: str, **extra: str) -> dict[str, str]:
    path = os.pathsep.join(
        [str(PLUGIN.parent), str(Path(cluster.kubectl_binary()).parent), os.environ["PATH"]]
    )
    return {**os.environ, "PATH": path, "KUBECONFIG": kubeconfig, **extra}


@pytest.fixture(scope="module")
def vestige(kubeconfig: str, crd_installed: None) -> Any:
    """Run ``kubectl-vestige ARGS``; never a traceback, at most one line on stderr for an error."""

    def run(
        *args: str, env: dict[str, str] | None = None, timeout: float = 120, expect: int | None = 0
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(PLUGIN), *args],
            env=env or plugin_env(kubeconfig),
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        assert "Traceback" not in proc.stderr, proc.stderr
        if expect is not None:
            assert proc.returncode == expect, (
                f"exit {proc.returncode}, stderr: {proc.stderr}\nstdout: {proc.stdout}"
            )
        if proc.returncode == 1:
            errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
            assert len(errors) == 1, proc.stderr
        elif proc.returncode == 2:  # usage: argparse's usage line and its error, or ours
            assert "error: " in proc.stderr, proc.stderr
        return proc

    return run


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    return next(line for line in proc.stderr.splitlines() if line.startswith("error: "))


def apply_memory(kubectl: Kubectl, ns: str, name: str, spec: dict[str, Any] | None = None) -> None:
    doc = {"apiVersion": "vestige.dev/v1alpha1", "kind": "VestigeMemory", "metadata": {"name": name}}
    if spec is not None:
        doc["spec"] = spec
    kubectl("-n", ns, "apply", "-f", "-", input=json.dumps(doc))


def wait_phase(
    kubectl: Kubectl, ns: str, name: str, phase: str = "Ready", timeout: float = 90
) -> dict[str, Any]:
    def settled() -> dict[str, Any] | None:
        obj = must_get(kubectl, ns, "vmem", name)
        status = obj.get("status", {})
        ok = (
            status.get("observedGeneration") == obj["metadata"]["generation"] and status.get("phase") == phase
        )
        return obj if ok else None

    return wait_until(settled, timeout, f"vmem {ns}/{name} in phase {phase}")


def grant_viewer(kubectl: Kubectl, ns: str, rules: list[dict[str, Any]]) -> None:
    """A Role with ``rules`` bound to the impersonated user VIEWER in ``ns``."""
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "viewer", "namespace": ns},
        "rules": rules,
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "viewer", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "viewer"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": VIEWER}],
    }
    kubectl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [role, binding]})
    )
    wait_until(
        lambda: (
            kubectl(
                "-n", ns, "auth", "can-i", "get", "vestigememories.vestige.dev", f"--as={VIEWER}", check=False
            ).stdout.strip()
            == "yes"
        ),
        30,
        "the viewer's Role to take effect",
    )


READ_MEMORIES = {"apiGroups": ["vestige.dev"], "resources": ["vestigememories"], "verbs": ["get", "list"]}
READ_PODS = {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}


# -- discovery, status ------------------------------------------------------------------------


def test_kubectl_finds_the_plugin(kubeconfig: str, namespace: str, crd_installed: None) -> None:
    env = plugin_env(kubeconfig)
    kubectl = cluster.kubectl_binary()
    listed = subprocess.run([kubectl, "plugin", "list"], env=env, capture_output=True, text=True, timeout=60)
    assert str(PLUGIN) in listed.stdout, listed.stdout + listed.stderr
    proc = subprocess.run(
        [kubectl, "vestige", "status", "-n", namespace], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert f'No VestigeMemory resources found in namespace "{namespace}"' in proc.stderr


def test_status_table_detail_json_and_yaml(
    vestige: Any, kubectl: Kubectl, namespace: str, operator_process: OperatorProcess
) -> None:
    apply_memory(kubectl, namespace, "alpha", {"agentId": "agent-a"})
    apply_memory(
        kubectl, namespace, "beta", {"storage": {"size": "2Gi"}, "vestige": {"image": "example.org/v:9.9.9"}}
    )
    alpha = wait_phase(kubectl, namespace, "alpha")
    wait_phase(kubectl, namespace, "beta")

    table = vestige("status", "-n", namespace).stdout.splitlines()
    assert table[0].split()[:4] == ["NAME", "AGENT", "PHASE", "READY"]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert rows["alpha"] == [
        "alpha",
        "agent-a",
        "Ready",
        "True",
        f"http://alpha.{namespace}.svc:8000",
        "5Gi/5Gi",
        "3.0.0",  # the operator's default image in force (the Deployment's vestige container)
        "-",  # LAST BACKUP
        "-",  # REPLICATED: no continuous backup
        rows["alpha"][-1],
    ]
    assert rows["beta"][5:7] == ["2Gi/2Gi", "9.9.9"]
    assert re.fullmatch(r"\d+s|\d+m\d*s?", rows["alpha"][-1])

    everywhere = vestige("status", "-A").stdout.splitlines()
    assert everywhere[0].split()[0] == "NAMESPACE"
    assert any(line.split()[:2] == [namespace, "alpha"] for line in everywhere[1:])

    detail = vestige("status", "alpha", "-n", namespace).stdout
    assert re.search(r"^Phase:\s+Ready$", detail, re.M)
    assert re.search(r"^Agent ID:\s+agent-a$", detail, re.M)
    assert re.search(r"^Storage:\s+5Gi requested, 5Gi actual \(PVC alpha-data\)$", detail, re.M)
    assert re.search(r"^Token:\s+Secret alpha-auth, key token$", detail, re.M)
    conditions = detail.split("Conditions:\n", 1)[1].split("\nEvents:", 1)[0]
    assert re.search(r"^\s+Ready\s+True\s+", conditions, re.M)
    assert re.search(r"^\s+StorageReady\s+True\s+", conditions, re.M)

    as_json = json.loads(vestige("status", "alpha", "-n", namespace, "-o", "json").stdout)
    assert as_json["phase"] == "Ready" and as_json["ready"] == "True" and as_json["agentId"] == "agent-a"
    assert as_json["storage"] == {"requested": "5Gi", "actual": "5Gi", "pvc": "alpha-data"}
    assert {c["type"] for c in as_json["conditions"]} >= {"Ready", "Reconciling", "Stalled", "StorageReady"}
    ready = next(c for c in as_json["conditions"] if c["type"] == "Ready")
    assert (
        ready["status"] == "True"
        and ready["lastTransitionTime"]
        == next(c for c in alpha["status"]["conditions"] if c["type"] == "Ready")["lastTransitionTime"]
    )
    assert isinstance(as_json["events"], list)
    listed = yaml.safe_load(vestige("status", "-n", namespace, "-o", "yaml").stdout)
    assert [i["name"] for i in listed["items"]] == ["alpha", "beta"]


def test_status_shows_recent_events(vestige: Any, kubectl: Kubectl, namespace: str) -> None:
    """Events of the resource and its children; the API server's own Events, written here."""
    apply_memory(kubectl, namespace, "evented")
    uid = must_get(kubectl, namespace, "vmem", "evented")["metadata"]["uid"]
    now = datetime.now(UTC)
    events = [
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"evented.{i}", "namespace": namespace},
            "involvedObject": {
                "kind": kind,
                "name": obj,
                "namespace": namespace,
                "apiVersion": api,
                "uid": uid,
            },
            "reason": reason,
            "message": message,
            "type": type_,
            "lastTimestamp": (now - timedelta(minutes=m)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "firstTimestamp": (now - timedelta(minutes=m)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "count": 1,
            "source": {"component": "test"},
        }
        for i, (kind, obj, api, reason, message, type_, m) in enumerate(
            [
                (
                    "VestigeMemory",
                    "evented",
                    "vestige.dev/v1alpha1",
                    "Stalled",
                    "token missing",
                    "Warning",
                    5,
                ),
                (
                    "PersistentVolumeClaim",
                    "evented-data",
                    "v1",
                    "ProvisioningSucceeded",
                    "bound",
                    "Normal",
                    3,
                ),
                ("VestigeMemory", "someone-else", "vestige.dev/v1alpha1", "Other", "not ours", "Normal", 1),
            ]
        )
    ]
    kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": events}))
    detail = vestige("status", "evented", "-n", namespace).stdout
    shown = detail.split("Events:\n", 1)[1]
    assert "VestigeMemory/evented" in shown and "token missing" in shown
    assert "PersistentVolumeClaim/evented-data" in shown
    assert shown.index("token missing") < shown.index("bound")  # oldest first
    assert "not ours" not in shown
    # Without the right to list events the rest is still shown, with a note.
    grant_viewer(kubectl, namespace, [READ_MEMORIES])
    limited = vestige("status", "evented", "-n", namespace, f"--as={VIEWER}").stdout
    assert "Name:" in limited and "<events not shown: not allowed to list events in namespace" in limited


# -- token ------------------------------------------------------------------------------------


def test_token_prints_only_the_token(
    vestige: Any, kubectl: Kubectl, kubeconfig: str, namespace: str, operator_process: OperatorProcess
) -> None:
    apply_memory(kubectl, namespace, "tok")
    secret = "my-own-token"
    kubectl("-n", namespace, "create", "secret", "generic", "custom", f"--from-literal=bearer={secret}")
    apply_memory(kubectl, namespace, "byo", {"auth": {"existingSecret": {"name": "custom", "key": "bearer"}}})
    wait_phase(kubectl, namespace, "tok")
    wait_phase(kubectl, namespace, "byo")
    expected = base64.b64decode(must_get(kubectl, namespace, "secret", "tok-auth")["data"]["token"]).decode()
    proc = vestige("token", "tok", "-n", namespace)
    assert proc.stdout == expected + "\n"
    assert proc.stderr == ""
    assert vestige("token", "byo", "-n", namespace).stdout == secret + "\n"
    # As a shell would use it:
    out = subprocess.run(
        ["sh", "-c", f'printf %s "$({PLUGIN} token tok -n {namespace})"'],
        env=plugin_env(kubeconfig),
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout == expected


def test_token_errors(vestige: Any, kubectl: Kubectl, namespace: str) -> None:
    missing = vestige("token", "nope", "-n", namespace, expect=1)
    assert error_line(missing) == f'error: VestigeMemory "nope" not found in namespace "{namespace}"'
    apply_memory(kubectl, namespace, "nosecret")  # no operator here: no Secret yet
    proc = vestige("token", "nosecret", "-n", namespace, expect=1)
    assert error_line(proc) == f'error: Secret "nosecret-auth" not found in namespace "{namespace}"'
    kubectl("-n", namespace, "create", "secret", "generic", "nosecret-auth", "--from-literal=other=x")
    proc = vestige("token", "nosecret", "-n", namespace, expect=1)
    assert error_line(proc) == f'error: Secret "nosecret-auth" in namespace "{namespace}" has no key "token"'
    grant_viewer(kubectl, namespace, [READ_MEMORIES])
    proc = vestige("token", "nosecret", "-n", namespace, f"--as={VIEWER}", expect=1)
    assert error_line(proc) == (
        f'error: not allowed to get Secret "nosecret-auth" in namespace "{namespace}": User "{VIEWER}" '
        f'cannot get resource "secrets" in API group "" in the namespace "{namespace}"'
    )


# -- errors common to every command -----------------------------------------------------------


def test_no_cluster_no_kubeconfig_no_crd(
    vestige: Any, kubeconfig: str, tmp_path: Path, namespace: str
) -> None:
    port = free_port()
    doc = yaml.safe_load(Path(kubeconfig).read_text())
    for c in doc["clusters"]:
        c["cluster"]["server"] = f"https://127.0.0.1:{port}"
    dead = tmp_path / "dead.kubeconfig"
    dead.write_text(yaml.safe_dump(doc))
    for args in (
        ["status"],
        ["token", "x"],
        ["suspend", "x"],
        ["backup", "x"],
        ["logs", "x"],
        ["connect", "x"],
    ):
        proc = vestige(*args, "--kubeconfig", str(dead), expect=1)
        assert error_line(proc).startswith(
            f"error: cannot reach the Kubernetes API server at https://127.0.0.1:{port}: "
        ), proc.stderr
        assert "Connection refused" in proc.stderr

    bogus = yaml.safe_load(Path(kubeconfig).read_text())
    for u in bogus["users"]:
        u["user"] = {"token": "not-a-valid-token"}
    (tmp_path / "bogus.kubeconfig").write_text(yaml.safe_dump(bogus))
    proc = vestige("status", "--kubeconfig", str(tmp_path / "bogus.kubeconfig"), expect=1)
    server = bogus["clusters"][0]["cluster"]["server"]
    assert error_line(proc) == (
        f"error: unauthorized: the Kubernetes API server at {server} rejected the credentials "
        "of this kubeconfig context"
    )
    for c in bogus["clusters"]:  # no CA: the server's certificate cannot be verified
        c["cluster"].pop("certificate-authority-data", None)
        c["cluster"].pop("certificate-authority", None)
    (tmp_path / "noca.kubeconfig").write_text(yaml.safe_dump(bogus))
    proc = vestige("status", "--kubeconfig", str(tmp_path / "noca.kubeconfig"), expect=1)
    assert error_line(proc).startswith(f"error: TLS with the Kubernetes API server at {server} failed: ")
    assert "CERTIFICATE_VERIFY_FAILED" in proc.stderr

    home = tmp_path / "home"
    home.mkdir()
    env = {**plugin_env(kubeconfig), "HOME": str(home)}
    env.pop("KUBECONFIG")
    env.pop("KUBERNETES_SERVICE_HOST", None)
    proc = vestige("status", env=env, expect=1)
    assert error_line(proc).startswith("error: no kubeconfig: none of ")
    assert "use --kubeconfig or set KUBECONFIG" in proc.stderr
    proc = vestige("status", "--kubeconfig", str(tmp_path / "absent"), expect=1)
    assert error_line(proc) == f"error: kubeconfig {tmp_path / 'absent'} does not exist"
    proc = vestige("status", "--context", "no-such-context", expect=1)
    assert "no-such-context" in error_line(proc)

    # Unknown namespace: still a clear "not found".
    proc = vestige("suspend", "x", "-n", f"{namespace}-absent", expect=1)
    assert error_line(proc) == f'error: VestigeMemory "x" not found in namespace "{namespace}-absent"'


def test_usage_errors_exit_2(vestige: Any) -> None:
    assert vestige("rotate-token", "x", "--grace", "ten minutes", expect=2).stdout == ""
    vestige("logs", "x", "-c", "sidecar", expect=2)
    vestige("frobnicate", expect=2)


# -- suspend / resume -------------------------------------------------------------------------


def test_suspend_and_resume(
    vestige: Any, kubectl: Kubectl, namespace: str, operator_process: OperatorProcess
) -> None:
    apply_memory(kubectl, namespace, "sleepy")
    wait_phase(kubectl, namespace, "sleepy")
    assert (
        vestige("suspend", "sleepy", "-n", namespace).stdout.strip()
        == "vestigememory.vestige.dev/sleepy suspended"
    )
    assert must_get(kubectl, namespace, "vmem", "sleepy")["spec"]["suspend"] is True
    wait_phase(kubectl, namespace, "sleepy", "Suspended")
    assert must_get(kubectl, namespace, "deployment", "sleepy")["spec"]["replicas"] == 0
    assert "already suspended" in vestige("suspend", "sleepy", "-n", namespace).stdout
    # Nothing to connect to or read logs from while suspended; both say so.
    wait_until(
        lambda: not json.loads(kubectl("-n", namespace, "get", "pods", "-o", "json").stdout)["items"],
        60,
        "the pod to go away",
    )
    proc = vestige("connect", "sleepy", "-n", namespace, "--no-token", expect=1)
    assert error_line(proc) == (
        f'error: VestigeMemory "sleepy" in namespace "{namespace}" is suspended (no pod); resume it with: '
        f"kubectl vestige resume sleepy -n {namespace}"
    )
    proc = vestige("logs", "sleepy", "-n", namespace, expect=1)
    assert error_line(proc) == f'error: VestigeMemory "sleepy" in namespace "{namespace}" suspended: no logs'

    assert (
        vestige("resume", "sleepy", "-n", namespace).stdout.strip()
        == "vestigememory.vestige.dev/sleepy resumed"
    )
    assert must_get(kubectl, namespace, "vmem", "sleepy")["spec"]["suspend"] is False
    wait_phase(kubectl, namespace, "sleepy")
    assert must_get(kubectl, namespace, "deployment", "sleepy")["spec"]["replicas"] == 1

    grant_viewer(kubectl, namespace, [READ_MEMORIES])
    proc = vestige("suspend", "sleepy", "-n", namespace, f"--as={VIEWER}", expect=1)
    assert error_line(proc).startswith(
        f'error: not allowed to patch VestigeMemory "sleepy" in namespace "{namespace}": '
    )
    assert 'cannot patch resource "vestigememories" in API group "vestige.dev"' in proc.stderr
    assert must_get(kubectl, namespace, "vmem", "sleepy")["spec"]["suspend"] is False


# -- rotate-token -----------------------------------------------------------------------------


def annotations(kubectl: Kubectl, ns: str, name: str) -> dict[str, str]:
    return must_get(kubectl, ns, "vmem", name)["metadata"].get("annotations") or {}


def test_rotate_token_sets_the_request_annotations(vestige: Any, kubectl: Kubectl, namespace: str) -> None:
    apply_memory(kubectl, namespace, "rot")
    before = datetime.now(UTC).replace(microsecond=0)
    out = vestige("rotate-token", "rot", "-n", namespace, "--grace", "1h30m").stdout
    assert "token rotation requested" in out
    ann = annotations(kubectl, namespace, "rot")
    requested = datetime.fromisoformat(ann["vestige.dev/rotate-token"].replace("Z", "+00:00"))
    assert before <= requested <= datetime.now(UTC)
    assert ann["vestige.dev/rotate-token-grace"] == "1h30m"
    # A second request in the same second still differs (the operator sees a new value).
    first = ann["vestige.dev/rotate-token"]
    vestige("rotate-token", "rot", "-n", namespace)
    ann = annotations(kubectl, namespace, "rot")
    assert ann["vestige.dev/rotate-token"] != first
    assert ann["vestige.dev/rotate-token-grace"] == "10m"
    # An invalid duration, or one above the operator's bound, is refused before anything is written.
    proc = vestige("rotate-token", "rot", "-n", namespace, "--grace=-5m", expect=2)
    assert "negative" in proc.stderr
    proc = vestige("rotate-token", "rot", "-n", namespace, "--grace", "200h", expect=2)
    assert "maximum grace period 168h" in proc.stderr
    assert annotations(kubectl, namespace, "rot") == ann
    # --grace 0 (after a leak): written as is, and read by the operator as "revoke at once".
    vestige("rotate-token", "rot", "-n", namespace, "--grace", "0")
    ann = annotations(kubectl, namespace, "rot")
    assert ann["vestige.dev/rotate-token-grace"] == "0"
    assert tokens.rotation_request(ann) == tokens.RotationRequest(
        ann["vestige.dev/rotate-token"], timedelta(0)
    )
    # Nobody rotates (no operator here): --wait times out with a clear message.
    proc = vestige("rotate-token", "rot", "-n", namespace, "--wait", "--timeout", "2s", expect=1)
    assert error_line(proc) == "error: timed out after 2s waiting for status.tokenRotatedAt of rot to change"
    # Without patch rights: which verb on what.
    grant_viewer(kubectl, namespace, [READ_MEMORIES])
    proc = vestige("rotate-token", "rot", "-n", namespace, f"--as={VIEWER}", expect=1)
    assert error_line(proc).startswith(
        f'error: not allowed to patch VestigeMemory "rot" in namespace "{namespace}"'
    )
    assert vestige("rotate-token", "nope", "-n", namespace, expect=1).stderr.startswith(
        'error: VestigeMemory "nope" not found'
    )


def crd_has_status_field(kubectl: Kubectl, crd: str, field: str) -> bool:
    obj = get(kubectl, "default", "crd", crd)
    if obj is None:
        return False
    for version in obj["spec"]["versions"]:
        status = version["schema"]["openAPIV3Schema"]["properties"].get("status", {})
        if field in status.get("properties", {}) or status.get("x-kubernetes-preserve-unknown-fields"):
            return True
    return False


def test_rotate_token_wait_returns_when_the_rotation_is_recorded(
    vestige: Any, kubectl: Kubectl, kubeconfig: str, namespace: str
) -> None:
    """The operator's side is played by the test: it records status.tokenRotatedAt once it sees the
    request (the real rotation is tested with the operator on branch `auth`)."""
    if not crd_has_status_field(kubectl, "vestigememories.vestige.dev", "tokenRotatedAt"):
        pytest.skip("this CRD has no status.tokenRotatedAt yet (added with the operator's token rotation)")
    apply_memory(kubectl, namespace, "rotw")
    proc = subprocess.Popen(
        [str(PLUGIN), "rotate-token", "rotw", "-n", namespace, "--wait", "--timeout", "60s"],
        env=plugin_env(kubeconfig),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(
            lambda: "vestige.dev/rotate-token" in annotations(kubectl, namespace, "rotw"), 30, "the request"
        )
        assert proc.poll() is None  # still waiting
        at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        kubectl(
            "-n",
            namespace,
            "patch",
            "vmem",
            "rotw",
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": {"tokenRotatedAt": at}}),
        )
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert f"token rotated at {at}" in out


# -- backup -----------------------------------------------------------------------------------


STANDIN_BACKUP_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": BACKUP_CRD},
    "spec": {
        "group": "vestige.dev",
        "names": {
            "kind": "VestigeBackup",
            "plural": "vestigebackups",
            "singular": "vestigebackup",
            "shortNames": ["vbak"],
        },
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1alpha1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                        },
                    }
                },
            }
        ],
    },
}


def wait_crd_gone(kubectl: Kubectl) -> None:
    wait_until(lambda: get(kubectl, "default", "crd", BACKUP_CRD) is None, 60, "the VestigeBackup CRD to go")
    # Discovery needs a moment more: until the group version stops serving the resource.
    wait_until(
        lambda: (
            "vestigebackups" not in kubectl("api-resources", "--api-group=vestige.dev", check=False).stdout
        ),
        60,
        "discovery without vestigebackups",
    )


@pytest.fixture
def backup_crd(kubectl: Kubectl) -> Iterator[None]:
    """The VestigeBackup CRD: the project's own (crds/) when it exists, else a stand-in with the
    contract's shape (spec.memory, status.phase), removed again afterwards."""
    if BACKUP_CRD_FILE.exists():
        kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=vestige-tests",
            "-f",
            str(BACKUP_CRD_FILE),
        )
        kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{BACKUP_CRD}")
        yield
        return
    kubectl("apply", "-f", "-", input=json.dumps(STANDIN_BACKUP_CRD))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{BACKUP_CRD}")
    yield
    kubectl("delete", "crd", BACKUP_CRD, "--wait=true", check=False)
    wait_crd_gone(kubectl)


def test_backup_without_the_crd_says_so(vestige: Any, kubectl: Kubectl, namespace: str) -> None:
    present = get(kubectl, "default", "crd", BACKUP_CRD) is not None
    if present:  # installed by another test or the project's crds/: take it away for this test
        kubectl("delete", "crd", BACKUP_CRD, "--wait=true")
        wait_crd_gone(kubectl)
    try:
        apply_memory(kubectl, namespace, "nobak")
        proc = vestige("backup", "nobak", "-n", namespace, expect=1)
        assert error_line(proc).startswith(
            "error: the VestigeBackup CRD (vestigebackups.vestige.dev) is not installed in this cluster"
        ), proc.stderr
        proc = vestige("backup", "absent", "-n", namespace, expect=1)
        assert error_line(proc) == f'error: VestigeMemory "absent" not found in namespace "{namespace}"'
    finally:
        if present and BACKUP_CRD_FILE.exists():
            kubectl(
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=vestige-tests",
                "-f",
                str(BACKUP_CRD_FILE),
            )


def backups(kubectl: Kubectl, ns: str) -> list[dict[str, Any]]:
    return json.loads(kubectl("-n", ns, "get", "vestigebackups", "-o", "json").stdout)["items"]


def set_backup_status(kubectl: Kubectl, ns: str, name: str, status: dict[str, Any]) -> None:
    kubectl(
        "-n",
        ns,
        "patch",
        "vestigebackup",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def test_backup_creates_a_vestigebackup_and_waits(
    vestige: Any, kubectl: Kubectl, kubeconfig: str, namespace: str, backup_crd: None
) -> None:
    apply_memory(kubectl, namespace, "bak")
    before = datetime.now(UTC).replace(microsecond=0)
    out = vestige("backup", "bak", "-n", namespace).stdout.strip()
    (created,) = backups(kubectl, namespace)
    name = created["metadata"]["name"]
    assert out == f"vestigebackup.vestige.dev/{name} created"
    assert created["spec"]["memory"] == "bak"
    stamp = datetime.strptime(name.removeprefix("bak-"), "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    assert before <= stamp <= datetime.now(UTC)
    # Built as the operator's scheduler builds its runs: owned by the memory, labelled with it.
    memory = must_get(kubectl, namespace, "vmem", "bak")
    expected = backup_manifest(
        Owner(name="bak", namespace=namespace, uid=memory["metadata"]["uid"]), name, None
    )
    assert created["metadata"]["labels"] == expected["metadata"]["labels"]
    assert created["metadata"]["ownerReferences"] == expected["metadata"]["ownerReferences"]

    # --wait: the backup controller's part (status.phase) is played by the test.
    for final, code in (("Completed", 0), ("Failed", 1)):
        time.sleep(1.1)  # the name has one-second resolution
        proc = subprocess.Popen(
            [str(PLUGIN), "backup", "bak", "-n", namespace, "--wait", "--timeout", "60s"],
            env=plugin_env(kubeconfig),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            known = {b["metadata"]["name"] for b in backups(kubectl, namespace)}
            new = wait_until(
                lambda known=known: (
                    [b for b in backups(kubectl, namespace) if b["metadata"]["name"] not in known] or None
                ),
                30,
                "the new VestigeBackup",
            )
            bname = new[0]["metadata"]["name"]
            set_backup_status(kubectl, namespace, bname, {"phase": "Running"})
            assert proc.poll() is None
            status: dict[str, Any] = {"phase": final}
            if final == "Failed":
                status["message"] = "disk full"
            set_backup_status(kubectl, namespace, bname, status)
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
        assert "Traceback" not in err
        assert proc.returncode == code, err
        if final == "Completed":
            assert out.splitlines()[-1] == f"vestigebackup.vestige.dev/{bname} completed"
        else:
            # The project's CRD may keep the reason in status.message or in a condition (a field
            # its schema lacks is pruned): the plugin shows whichever the stored status holds.
            stored = must_get(kubectl, namespace, "vestigebackup", bname)["status"]
            shown = stored.get("message") or "no message"
            assert f'error: VestigeBackup "{bname}" failed: {shown}' in err

    grant_viewer(kubectl, namespace, [READ_MEMORIES])
    proc = vestige("backup", "bak", "-n", namespace, f"--as={VIEWER}", expect=1)
    assert error_line(proc).startswith("error: not allowed to create VestigeBackup ")
    assert 'cannot create resource "vestigebackups" in API group "vestige.dev"' in proc.stderr


# -- logs and connect on the kwok node ----------------------------------------------------------


def test_logs_errors(
    vestige: Any, kubectl: Kubectl, namespace: str, operator_process: OperatorProcess
) -> None:
    proc = vestige("logs", "ghost", "-n", namespace, expect=1)
    assert error_line(proc) == f'error: VestigeMemory "ghost" not found in namespace "{namespace}"'
    apply_memory(kubectl, namespace, "talky")
    wait_phase(kubectl, namespace, "talky")
    pod = json.loads(kubectl("-n", namespace, "get", "pods", "-o", "json").stdout)["items"][0]["metadata"][
        "name"
    ]
    grant_viewer(kubectl, namespace, [READ_MEMORIES, READ_PODS])
    proc = vestige("logs", "talky", "-n", namespace, "-c", "vestige", f"--as={VIEWER}", expect=1)
    assert error_line(proc) == (
        f'error: not allowed to get logs of Pod "{pod}" in namespace "{namespace}": '
        f'User "{VIEWER}" cannot get resource "pods/log" in API group "" in the namespace "{namespace}"'
    )


def test_connect_errors_and_port_forward_failure(
    vestige: Any, kubectl: Kubectl, kubeconfig: str, namespace: str, operator_process: OperatorProcess
) -> None:
    proc = vestige("connect", "ghost", "-n", namespace, expect=1)
    assert error_line(proc) == f'error: VestigeMemory "ghost" not found in namespace "{namespace}"'
    apply_memory(kubectl, namespace, "conn")
    wait_phase(kubectl, namespace, "conn")
    pod = json.loads(kubectl("-n", namespace, "get", "pods", "-o", "json").stdout)["items"][0]["metadata"][
        "name"
    ]
    # kubectl missing: said so, not a traceback.
    proc = vestige(
        "connect",
        "conn",
        "-n",
        namespace,
        env=plugin_env(kubeconfig, VESTIGE_KUBECTL="/nonexistent/kubectl"),
        expect=1,
    )
    assert error_line(proc) == "error: cannot run /nonexistent/kubectl: No such file or directory"
    # The port-forward itself refused (no create on pods/portforward): kubectl's reason, one line.
    grant_viewer(
        kubectl,
        namespace,
        [READ_MEMORIES, READ_PODS, {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}],
    )
    proc = vestige("connect", "conn", "-n", namespace, f"--as={VIEWER}", expect=1)
    line = error_line(proc)
    assert line.startswith("error: port-forward failed: "), proc.stderr
    assert f'User "{VIEWER}" cannot create resource "pods/portforward"' in line
    assert pod in line
    # Without the right to read the Secret, --no-token still gets as far as the forward.
    grant_viewer(kubectl, namespace, [READ_MEMORIES, READ_PODS])
    proc = vestige("connect", "conn", "-n", namespace, f"--as={VIEWER}", expect=1)
    assert error_line(proc).startswith('error: not allowed to get Secret "conn-auth"')
    proc = vestige("connect", "conn", "-n", namespace, f"--as={VIEWER}", "--no-token", expect=1)
    assert error_line(proc).startswith("error: port-forward failed: ")
    proc = vestige("connect", "conn", "-n", namespace, "--port", "70000", expect=2)


# -- connect through a real pod (the real node) -------------------------------------------------


def sigint_as_from_a_terminal() -> None:
    """``preexec_fn`` for a program a test stops with Ctrl-C (SIGINT): a terminal's foreground job
    has SIGINT at its default; a run started in the background (`nohup bash .ci/run &`) passes it
    on ignored, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@dataclass
class ConnectSession:
    """A running ``kubectl vestige connect``: its local URL and the OpenClaw config it printed."""

    proc: subprocess.Popen[str]
    url: str
    config: dict[str, Any]
    output: str

    def interrupt(self, timeout: float = 30) -> int:
        """Ctrl-C: the exit code (0 when it ended cleanly)."""
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=timeout)


def run_connect(
    env: dict[str, str], name: str, namespace: str, *extra: str, timeout: float = 60
) -> ConnectSession:
    """Start ``kubectl-vestige connect`` and read its output up to the OpenClaw config."""
    proc = subprocess.Popen(
        [str(PLUGIN), "connect", name, "-n", namespace, *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=sigint_as_from_a_terminal,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(
                f"connect exited ({proc.wait()}): {proc.stderr.read() if proc.stderr else ''}"
            )
        lines.append(line)
        if line.rstrip() == "  }":  # the end of the indented OpenClaw config
            break
    text = "".join(lines)
    config = json.loads(text.split("OpenClaw plugin config:\n", 1)[1])
    return ConnectSession(proc, config["serverUrl"], config, text)


# -- connect's process handling (a stand-in for `kubectl port-forward`) -------------------------

#: Plays `kubectl port-forward` (kwok's node has no kubelet to forward to): prints kubectl's
#: "Forwarding from" line for a real listening socket, records its pid and argv, then either
#: waits to be stopped or, with STANDIN_FAIL set, fails like a forward whose pod went away.
STANDIN_KUBECTL = """#!{python}
import json, os, signal, socket, sys, time
state = os.environ["STANDIN_STATE"]
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen()
with open(state, "w") as f:
    json.dump({{"pid": os.getpid(), "argv": sys.argv[1:]}}, f)
print(f"Forwarding from 127.0.0.1:{{sock.getsockname()[1]}} -> 8000", flush=True)
if os.environ.get("STANDIN_FAIL"):
    time.sleep(0.5)
    print("E1202 lost connection to pod", file=sys.stderr, flush=True)
    print("error: lost connection to pod", file=sys.stderr, flush=True)
    sys.exit(1)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    time.sleep(1)
"""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_connect_prints_the_forward_and_ends_cleanly(
    kubectl: Kubectl, kubeconfig: str, namespace: str, tmp_path: Path, operator_process: OperatorProcess
) -> None:
    apply_memory(kubectl, namespace, "fwd", {"agentId": "fwd-agent"})
    wait_phase(kubectl, namespace, "fwd")
    pod = json.loads(kubectl("-n", namespace, "get", "pods", "-o", "json").stdout)["items"][0]["metadata"][
        "name"
    ]
    token = base64.b64decode(must_get(kubectl, namespace, "secret", "fwd-auth")["data"]["token"]).decode()
    standin = tmp_path / "kubectl"
    standin.write_text(STANDIN_KUBECTL.format(python=sys.executable))
    standin.chmod(0o755)
    state = tmp_path / "state.json"
    env = plugin_env(kubeconfig, VESTIGE_KUBECTL=str(standin), STANDIN_STATE=str(state))

    session = run_connect(env, "fwd", namespace)
    recorded = json.loads(state.read_text())
    assert recorded["argv"] == [
        "port-forward",
        f"--namespace={namespace}",
        "--address=127.0.0.1",
        f"pod/{pod}",
        ":8000",
    ]
    port = int(session.url.rsplit(":", 1)[1])
    assert session.config == {
        "serverUrl": f"http://127.0.0.1:{port}",
        "authToken": token,
        "timeoutMs": 30000,
        "agentId": "fwd-agent",
    }
    assert f"-> {namespace}/{pod}:8000" in session.output
    assert f"$(kubectl vestige token fwd -n {namespace})" in session.output
    assert session.proc.poll() is None and pid_alive(recorded["pid"])
    assert session.interrupt() == 0  # Ctrl-C
    assert "port-forward stopped" in (session.proc.stderr.read() if session.proc.stderr else "")
    wait_until(lambda: not pid_alive(recorded["pid"]), 10, "the port-forward process to end")

    # SIGTERM ends it the same way.
    session = run_connect(env, "fwd", namespace, "--port", "18765", "--no-token")
    recorded = json.loads(state.read_text())
    assert recorded["argv"][-1] == "18765:8000"
    assert session.config["authToken"].startswith("<the output of: kubectl vestige token fwd")
    session.proc.send_signal(signal.SIGTERM)
    assert session.proc.wait(timeout=30) == 0
    wait_until(lambda: not pid_alive(recorded["pid"]), 10, "the port-forward process to end")

    # The forward dies under it: exit 1 with kubectl's reason.
    session = run_connect({**env, "STANDIN_FAIL": "1"}, "fwd", namespace)
    assert session.proc.wait(timeout=30) == 1
    err = session.proc.stderr.read() if session.proc.stderr else ""
    assert "Traceback" not in err
    assert "error: port-forward ended (kubectl exit code 1): lost connection to pod" in err


def test_restore_creates_a_new_memory_the_api_server_accepts(
    vestige: Any, kubectl: Kubectl, namespace: str
) -> None:
    destination = {
        "s3": {
            "endpoint": "http://s3.storage.svc:7070",
            "bucket": "backups",
            "credentialsSecret": {"name": "c"},
        }
    }
    apply_memory(
        kubectl,
        namespace,
        "src",
        {
            "agentId": "research",
            "storage": {"size": "2Gi"},
            "backup": {"destination": destination, "continuous": {"enabled": True}},
        },
    )
    out = vestige(
        "restore", "copy", "--from", f"{namespace}/src", "--at", "2026-12-02T11:00:00Z", "-n", namespace
    )
    assert out.stdout.strip() == (
        f"vestigememory.vestige.dev/copy created, restoring {namespace}/src as of 2026-12-02T11:00:00Z"
    )
    copy = must_get(kubectl, namespace, "vmem", "copy")  # admitted by the real API server's schema and CEL
    restore = copy["spec"]["restore"]["fromBackup"]
    assert (restore["source"], restore["pointInTime"]) == (f"{namespace}/research", "2026-12-02T11:00:00Z")
    assert {k: restore["destination"]["s3"][k] for k in ("endpoint", "bucket")} == {
        "endpoint": "http://s3.storage.svc:7070",
        "bucket": "backups",
    }
    assert copy["spec"]["storage"]["size"] == "2Gi"
    latest = vestige("restore", "copy2", "--from", "src", "-n", namespace).stdout  # same namespace
    assert "restoring" in latest and "snapshot latest" in latest
    assert must_get(kubectl, namespace, "vmem", "copy2")["spec"]["restore"]["fromBackup"]["latest"] is True
    bad = vestige("restore", "copy3", "--from", "src", "--at", "yesterday", "-n", namespace, expect=1)
    assert error_line(bad).startswith("error: the restore would not be accepted:"), bad.stderr
    assert get(kubectl, namespace, "vmem", "copy3") is None
    vestige("restore", "copy4", "--from", "src", "--at", "latest", "--snapshot", "latest", expect=2)
    missing = vestige("restore", "copy5", "--from", "absent", "-n", namespace, expect=1)
    assert error_line(missing) == f'error: VestigeMemory "absent" not found in namespace "{namespace}"'
