"""Pure rendering of the children (children.py) and the reconciler's comparison helpers."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import yaml
from vestige_operator.api import VestigeMemorySpec
from vestige_operator.caches import trim
from vestige_operator.children import (
    auth_secret_ref,
    ignored_env,
    ingress_url,
    manifest_hash,
    render_children,
    render_deployment,
    render_ingress,
    render_network_policy,
    render_pvc,
    render_secret,
    render_service,
    render_vestige_secret,
    token_hash,
)
from vestige_operator.plan import apply_reason, first_difference, owned_by
from vestige_operator.vocabulary import (
    ANNOTATION_APPLIED_HASH,
    ANNOTATION_TOKEN_HASH,
    BRIDGE_PORT,
    Images,
    Owner,
    selector_labels,
)

OWNER = Owner(name="agent-a", namespace="team", uid="0f6a1c1e-0000-4000-8000-000000000001")
IMAGES = Images(
    vestige="example.org/vestige:3.1.0",
    bridge="example.org/bridge:0.1.0",
    litestream="example.org/litestream:0.5.18",
)
HASH = token_hash("t0ken")
HOSTILE = "line1\nline2: \"quoted\" {{ .Values.x }} 'single' # not a comment"


def spec(**fields: Any) -> VestigeMemorySpec:
    return VestigeMemorySpec.model_validate(fields)


def deployment(s: VestigeMemorySpec | None = None) -> dict[str, Any]:
    return render_deployment(OWNER, s or spec(), IMAGES, HASH)


def containers(dep: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in dep["spec"]["template"]["spec"]["containers"]}


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


# -- Pod Security Admission "restricted" ---------------------------------------------------------


@pytest.mark.parametrize("generation", ["v3", "v1"])
def test_pod_meets_restricted_pod_security(generation: str) -> None:
    pod = deployment(spec(vestige={"generation": generation}))["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 1000
    assert pod["securityContext"]["fsGroup"] == 1000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert key not in pod
    # restricted allows only these volume types
    for volume in pod["volumes"]:
        assert set(volume) - {"name"} <= {"persistentVolumeClaim", "emptyDir", "secret"}
    assert len(pod["containers"]) == 2
    for c in pod["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["runAsNonRoot"] is True
        assert sc["runAsUser"] == 1000
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert sc.get("privileged") is False
        assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"]), "read-only root needs a /tmp"


# -- ports: only the bridge is reachable ---------------------------------------------------------


@pytest.mark.parametrize("generation", ["v3", "v1"])
def test_only_the_bridge_declares_a_port(generation: str) -> None:
    cs = containers(deployment(spec(vestige={"generation": generation})))
    assert "ports" not in cs["vestige"]
    assert cs["bridge"]["ports"] == [{"name": "http", "containerPort": BRIDGE_PORT, "protocol": "TCP"}]


@pytest.mark.parametrize("generation", ["v3", "v1"])
def test_vestige_keeps_stdin_open(generation: str) -> None:
    """Every Vestige exits when stdin reaches EOF (3.x too, with --http): the container must
    have an open stdin, or it exits at once and crash-loops (seen on the real node)."""
    cs = containers(deployment(spec(vestige={"generation": generation})))
    assert cs["vestige"]["stdin"] is True
    assert cs["vestige"].get("stdinOnce", False) is False
    assert "stdin" not in cs["bridge"]


def test_vestige_v3_serves_http_on_loopback_with_its_internal_token() -> None:
    vestige = containers(deployment())["vestige"]
    assert vestige["image"] == IMAGES.vestige
    assert vestige["command"] == ["vestige-mcp"]
    assert vestige["args"] == ["--http", "--http-port", "3100"]
    env = env_of(vestige)
    assert env["VESTIGE_HTTP_BIND"] == "127.0.0.1"
    assert env["VESTIGE_HTTP_PORT"] == "3100"
    assert env["VESTIGE_DATA_DIR"] == "/data/vestige"
    assert env["FASTEMBED_CACHE_PATH"].startswith("/data/")  # the model cache lives on the PVC
    # Vestige's own token, never the agents' (issue 13, item 3)
    assert env["VESTIGE_AUTH_TOKEN"] == {"secretKeyRef": {"name": "agent-a-auth", "key": "vestige-token"}}
    assert {"name": "data", "mountPath": "/data"} in vestige["volumeMounts"]
    assert all(m["name"] != "auth" for m in vestige["volumeMounts"])
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert probe not in vestige  # the kubelet cannot reach 127.0.0.1 in the pod


def test_vestige_v1_runs_behind_a_loopback_gateway_never_supergateway() -> None:
    d = deployment(spec(vestige={"generation": "v1", "image": "example.org/vestige:1.3.0"}))
    vestige = containers(d)["vestige"]
    assert vestige["command"] == ["mcp-proxy"]
    args = vestige["args"]
    assert args[args.index("--host") + 1] == "127.0.0.1"
    assert args[args.index("--port") + 1] == "3100"
    # Vestige runs under a shell that creates the database's directory on a fresh volume and ends
    # mcp-proxy when Vestige exits (the container restarts)
    assert args[args.index("--") + 1 :] == [
        "sh",
        "-c",
        'mkdir -p "$XDG_DATA_HOME" && "$@"; kill -TERM "$PPID"',
        "vestige",
        "vestige-mcp",
        "--data-dir",
        "/data/vestige/vestige.db",
    ]
    assert "supergateway" not in json.dumps(d)
    assert "VESTIGE_HTTP_BIND" not in env_of(vestige)
    # backups/exports of 1.x/2.x land beside the database on the volume, not in the emptyDir HOME
    assert env_of(vestige)["XDG_DATA_HOME"] == "/data/vestige"


def test_bridge_probes_and_environment() -> None:
    bridge = containers(deployment(spec(agentId="custom-agent")))["bridge"]
    assert bridge["image"] == IMAGES.bridge
    assert bridge["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert bridge["readinessProbe"]["httpGet"]["path"] == "/readyz"
    startup = bridge["startupProbe"]
    assert startup["httpGet"]["path"] == "/readyz"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600  # first-boot model download
    env = env_of(bridge)
    assert env["VESTIGE_MCP_URL"] == "http://127.0.0.1:3100/mcp"
    assert env["VESTIGE_AGENT_ID"] == "custom-agent"
    assert env["VESTIGE_ALLOW_ANONYMOUS"] == "false"
    # The agents' token as files the bridge follows (rotation without restart), Vestige's upstream.
    assert "VESTIGE_AUTH_TOKEN" not in env
    assert env["VESTIGE_AUTH_TOKEN_DIR"] == "/var/run/vestige/auth"
    assert {"name": "auth", "mountPath": "/var/run/vestige/auth", "readOnly": True} in bridge["volumeMounts"]
    assert env["VESTIGE_MCP_TOKEN"] == {"secretKeyRef": {"name": "agent-a-auth", "key": "vestige-token"}}


def test_bridge_token_volume_never_holds_the_internal_token() -> None:
    pod = deployment()["spec"]["template"]["spec"]
    [volume] = [v for v in pod["volumes"] if v["name"] == "auth"]
    secret = volume["secret"]
    assert secret["secretName"] == "agent-a-auth"
    assert secret["items"] == [
        {"key": "token", "path": "token"},
        {"key": "token-previous", "path": "token-previous"},
        {"key": "token-previous-expires", "path": "token-previous-expires"},
    ]
    assert secret["optional"] is True  # the rotation keys exist only during a grace period
    assert secret["defaultMode"] == 0o440


def test_anonymous_bridge_gets_no_token_at_all() -> None:
    d = deployment(spec(bridge={"allowAnonymous": True}))
    bridge = containers(d)["bridge"]
    env = env_of(bridge)
    assert env["VESTIGE_ALLOW_ANONYMOUS"] == "true"
    assert "VESTIGE_AUTH_TOKEN" not in env
    assert "VESTIGE_AUTH_TOKEN_DIR" not in env
    assert all(m["name"] != "auth" for m in bridge["volumeMounts"])
    assert all(v["name"] != "auth" for v in d["spec"]["template"]["spec"]["volumes"])
    # Vestige stays protected by its internal token.
    assert env["VESTIGE_MCP_TOKEN"] == {"secretKeyRef": {"name": "agent-a-auth", "key": "vestige-token"}}


def test_service_exposes_only_the_bridge_port() -> None:
    svc = render_service(OWNER, spec(service={"type": "NodePort", "annotations": {"a": "b"}}))
    assert svc["spec"]["ports"] == [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}]
    assert svc["spec"]["type"] == "NodePort"
    assert svc["spec"]["selector"] == selector_labels("agent-a")
    assert svc["metadata"]["annotations"] == {"a": "b"}


def test_network_policy_admits_only_the_bridge_port() -> None:
    default = render_network_policy(OWNER, spec())
    assert default["spec"]["podSelector"] == {"matchLabels": selector_labels("agent-a")}
    assert default["spec"]["policyTypes"] == ["Ingress"]
    [rule] = default["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8000}]
    assert rule["from"] == [{"podSelector": {}}]  # same namespace only
    peers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}}]
    custom = render_network_policy(OWNER, spec(networkPolicy={"from": peers}))
    assert custom["spec"]["ingress"][0]["from"] == peers


# -- metadata, ownership ---------------------------------------------------------------------------


def all_children(s: VestigeMemorySpec) -> list[dict[str, Any]]:
    return [
        render_secret(OWNER, "tok", "internal"),
        render_vestige_secret(OWNER, "internal"),
        *render_children(OWNER, s, IMAGES, HASH).apply,
    ]


def test_every_child_carries_the_standard_labels() -> None:
    for child in all_children(spec(ingress={"enabled": True})):
        labels = child["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "vestige"
        assert labels["app.kubernetes.io/instance"] == "agent-a"
        assert labels["app.kubernetes.io/managed-by"] == "vestige-operator"
        assert labels["app.kubernetes.io/component"]
        assert child["metadata"]["namespace"] == "team"


def test_pod_labels_contain_the_selector_and_user_labels() -> None:
    d = deployment(spec(pod={"labels": {"team": "x"}, "annotations": {"note": HOSTILE}}))
    template = d["spec"]["template"]["metadata"]
    assert selector_labels("agent-a").items() <= template["labels"].items()
    assert d["spec"]["selector"]["matchLabels"] == selector_labels("agent-a")
    assert template["labels"]["team"] == "x"
    assert template["annotations"]["note"] == HOSTILE
    assert template["annotations"][ANNOTATION_TOKEN_HASH] == HASH


@pytest.mark.parametrize(("policy", "owned"), [("Retain", False), ("Delete", True)])
def test_pvc_owner_reference_follows_the_reclaim_policy(policy: str, owned: bool) -> None:
    pvc = render_pvc(OWNER, spec(storage={"reclaimPolicy": policy, "size": "7Gi"}))
    assert pvc["metadata"]["name"] == "agent-a-data"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "7Gi"
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert "storageClassName" not in pvc["spec"]
    assert ("ownerReferences" in pvc["metadata"]) is owned
    if owned:
        assert pvc["metadata"]["ownerReferences"][0]["uid"] == OWNER.uid


def test_other_children_are_owned_by_the_memory_as_controller() -> None:
    for child in all_children(spec(ingress={"enabled": True})):
        if child["kind"] == "PersistentVolumeClaim":
            continue
        [ref] = child["metadata"]["ownerReferences"]
        assert ref == {
            "apiVersion": "vestige.dev/v1alpha1",
            "kind": "VestigeMemory",
            "name": "agent-a",
            "uid": OWNER.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


# -- tokens -------------------------------------------------------------------------------------


def test_secret_holds_both_tokens_and_the_pod_only_a_hash() -> None:
    secret = render_secret(OWNER, "s3cr3t-token-value", "internal-vestige-value")
    assert secret["metadata"]["name"] == "agent-a-auth"
    assert base64.b64decode(secret["data"]["token"]) == b"s3cr3t-token-value"
    assert base64.b64decode(secret["data"]["vestige-token"]) == b"internal-vestige-value"
    d = render_deployment(OWNER, spec(), IMAGES, token_hash("internal-vestige-value"))
    assert "s3cr3t-token-value" not in json.dumps(d)
    assert "internal-vestige-value" not in json.dumps(d)
    assert d["spec"]["template"]["metadata"]["annotations"] == {
        "vestige.dev/vestige-token-hash": token_hash("internal-vestige-value")
    }
    assert token_hash("a") != token_hash("b")
    assert token_hash("a") == token_hash(b"a")


def test_existing_secret_is_referenced_not_created() -> None:
    s = spec(auth={"existingSecret": {"name": "mine", "key": "bearer"}})
    assert auth_secret_ref("agent-a", s) == ("mine", "bearer")
    d = deployment(s)
    cs = containers(d)
    internal = {"secretKeyRef": {"name": "agent-a-vestige", "key": "vestige-token"}}
    assert env_of(cs["vestige"])["VESTIGE_AUTH_TOKEN"] == internal  # never the user's Secret
    assert env_of(cs["bridge"])["VESTIGE_MCP_TOKEN"] == internal
    [volume] = [v for v in d["spec"]["template"]["spec"]["volumes"] if v["name"] == "auth"]
    assert volume["secret"]["secretName"] == "mine"
    assert volume["secret"]["items"][0] == {"key": "bearer", "path": "token"}
    vestige_secret = render_vestige_secret(OWNER, "internal")
    assert vestige_secret["metadata"]["name"] == "agent-a-vestige"
    assert set(vestige_secret["data"]) == {"vestige-token"}


# -- spec knobs ---------------------------------------------------------------------------------


def test_suspend_scales_to_zero_and_strategy_is_recreate() -> None:
    assert deployment()["spec"]["replicas"] == 1
    assert deployment(spec(suspend=True))["spec"]["replicas"] == 0
    assert deployment()["spec"]["strategy"] == {"type": "Recreate"}


def test_resources_default_and_override() -> None:
    default = containers(deployment())
    assert default["vestige"]["resources"]["requests"]["memory"]
    assert default["bridge"]["resources"]["limits"]["memory"]
    custom = containers(deployment(spec(vestige={"resources": {"limits": {"memory": "2Gi"}}})))
    assert custom["vestige"]["resources"] == {"limits": {"memory": "2Gi"}}


def test_user_env_is_passed_but_reserved_names_are_dropped_and_reported() -> None:
    s = spec(
        vestige={
            "env": [
                {"name": "RUST_LOG", "value": "debug"},
                {"name": "VESTIGE_HTTP_BIND", "value": "0.0.0.0"},
                {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}},
            ]
        },
        bridge={"env": [{"name": "VESTIGE_MCP_URL", "value": "http://evil"}, {"name": "X", "value": ""}]},
    )
    cs = containers(deployment(s))
    vestige_env = [e["name"] for e in cs["vestige"]["env"]]
    assert vestige_env.count("VESTIGE_HTTP_BIND") == 1
    assert env_of(cs["vestige"])["VESTIGE_HTTP_BIND"] == "127.0.0.1"
    assert env_of(cs["vestige"])["RUST_LOG"] == "debug"
    assert env_of(cs["vestige"])["FROM_CM"] == {"configMapKeyRef": {"name": "c", "key": "k"}}
    assert env_of(cs["bridge"])["VESTIGE_MCP_URL"] == "http://127.0.0.1:3100/mcp"
    assert env_of(cs["bridge"])["X"] == ""
    assert ignored_env(s) == ["vestige/VESTIGE_HTTP_BIND", "bridge/VESTIGE_MCP_URL"]


def test_pod_scheduling_options_pass_through() -> None:
    s = spec(
        pod={
            "nodeSelector": {"disk": "ssd"},
            "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {"nodeAffinity": {}},
            "priorityClassName": "high",
            "imagePullSecrets": [{"name": "pull"}],
        },
        vestige={"image": "example.org/other:3", "imagePullPolicy": "Always"},
    )
    pod = deployment(s)["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"disk": "ssd"}
    assert pod["tolerations"][0]["key"] == "k"
    assert pod["affinity"] == {"nodeAffinity": {}}
    assert pod["priorityClassName"] == "high"
    assert pod["imagePullSecrets"] == [{"name": "pull"}]
    assert containers(deployment(s))["vestige"]["image"] == "example.org/other:3"
    assert containers(deployment(s))["vestige"]["imagePullPolicy"] == "Always"


def test_ingress_routes_to_the_bridge_and_reports_its_url() -> None:
    s = spec(
        ingress={
            "enabled": True,
            "className": "nginx",
            "host": "memory.example.com",
            "path": "/agent",
            "tls": {"secretName": "tls"},
            "annotations": {"x": HOSTILE},
        }
    )
    ing = render_ingress(OWNER, s)
    [rule] = ing["spec"]["rules"]
    assert rule["host"] == "memory.example.com"
    [path] = rule["http"]["paths"]
    assert path["path"] == "/agent"
    assert path["pathType"] == "Prefix"
    assert path["backend"] == {"service": {"name": "agent-a", "port": {"name": "http"}}}
    assert ing["spec"]["ingressClassName"] == "nginx"
    assert ing["spec"]["tls"] == [{"hosts": ["memory.example.com"], "secretName": "tls"}]
    assert ing["metadata"]["annotations"]["x"] == HOSTILE
    assert ingress_url(s) == "https://memory.example.com/agent"
    assert ingress_url(spec()) is None


def test_switched_off_children_are_listed_for_removal() -> None:
    on = render_children(OWNER, spec(ingress={"enabled": True}), IMAGES, HASH)
    assert [m["kind"] for m in on.apply] == [
        "PersistentVolumeClaim",
        "Deployment",
        "Service",
        "NetworkPolicy",
        "Ingress",
    ]
    assert on.remove_kinds == ()
    off = render_children(OWNER, spec(networkPolicy={"enabled": False}), IMAGES, HASH)
    assert [m["kind"] for m in off.apply] == ["PersistentVolumeClaim", "Deployment", "Service"]
    assert off.remove_kinds == ("NetworkPolicy", "Ingress")


def test_no_deployment_without_a_token() -> None:
    kinds = [m["kind"] for m in render_children(OWNER, spec(), IMAGES, None).apply]
    assert "Deployment" not in kinds


# -- hostile values stay one value ----------------------------------------------------------------


def test_hostile_values_stay_one_value_through_json_and_yaml() -> None:
    s = spec(
        vestige={"env": [{"name": "NOTE", "value": HOSTILE}]},
        pod={"annotations": {"hostile": HOSTILE}},
        service={"annotations": {"hostile": HOSTILE}},
    )
    for child in render_children(OWNER, s, IMAGES, HASH).apply:
        for text in (json.dumps(child), yaml.safe_dump(child)):
            loaded = json.loads(text) if text.startswith("{") else yaml.safe_load(text)
            assert loaded == child
    d = deployment(s)
    assert env_of(containers(d)["vestige"])["NOTE"] == HOSTILE
    assert d["spec"]["template"]["metadata"]["annotations"]["hostile"] == HOSTILE


# -- the applied-hash annotation and the comparison with live objects ------------------------------


def test_applied_hash_is_stable_and_tracks_the_rendering() -> None:
    a = render_children(OWNER, spec(), IMAGES, HASH).apply
    b = render_children(OWNER, spec(), IMAGES, HASH).apply
    assert a == b
    for m in a:
        assert m["metadata"]["annotations"][ANNOTATION_APPLIED_HASH] == manifest_hash(m)
    c = render_children(OWNER, spec(vestige={"image": "example.org/v:3.2"}), IMAGES, HASH).apply
    changed = {m["kind"] for m, n in zip(a, c, strict=True) if m != n}
    assert changed == {"Deployment"}


def live(manifest: dict[str, Any]) -> dict[str, Any]:
    """What the API server would return: the manifest plus defaults and server fields."""
    obj = json.loads(json.dumps(manifest))
    obj["metadata"].update(uid="u-1", resourceVersion="42", generation=1, managedFields=[{"manager": "x"}])
    if obj["kind"] == "Deployment":
        obj["spec"]["progressDeadlineSeconds"] = obj["spec"].get("progressDeadlineSeconds", 600)
        pod = obj["spec"]["template"]["spec"]
        pod["restartPolicy"] = "Always"
        pod["dnsPolicy"] = "ClusterFirst"
        for c in pod["containers"]:
            c["terminationMessagePath"] = "/dev/termination-log"
            # the server omits an empty value (omitempty) but keeps the entry
            c["env"] = [{k: v for k, v in e.items() if v != ""} for e in c["env"]]
        obj["status"] = {"replicas": 1}
    return obj


def test_live_object_with_server_defaults_needs_no_apply() -> None:
    s = spec(bridge={"env": [{"name": "EMPTY", "value": ""}]})
    for m in render_children(OWNER, s, IMAGES, HASH).apply:
        assert apply_reason(m, live(m)) is None, m["kind"]


def test_drift_and_changes_are_detected() -> None:
    [pvc, dep, svc, netpol] = render_children(OWNER, spec(), IMAGES, HASH).apply
    assert apply_reason(dep, None) == "absent"
    edited = live(dep)
    edited["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:latest"
    reason = apply_reason(dep, edited)
    assert reason is not None and "/containers/0/image" in reason
    scaled = live(dep)
    scaled["spec"]["replicas"] = 3
    assert apply_reason(dep, scaled) == "drift at /spec/replicas"
    # Another manager's port survives every apply (server-side apply never removes it): not drift.
    extra_port = live(svc)
    extra_port["spec"]["ports"].append({"name": "vestige", "port": 3100})
    assert apply_reason(svc, extra_port) is None
    # Our own port changed is drift.
    moved = live(svc)
    moved["spec"]["ports"][0]["targetPort"] = 3100
    assert apply_reason(svc, moved) == "drift at /spec/ports/0/targetPort"
    new_spec = render_children(OWNER, spec(storage={"size": "9Gi"}), IMAGES, HASH).apply[0]
    assert apply_reason(new_spec, live(pvc)) == "rendering changed"
    assert apply_reason(netpol, live(netpol)) is None


def test_quantities_compare_by_value_only_where_they_are_quantities() -> None:
    assert first_difference({"requests": {"memory": "0.5Gi"}}, {"requests": {"memory": "512Mi"}}) is None
    assert first_difference({"requests": {"memory": "1Gi"}}, {"requests": {"memory": "512Mi"}}) is not None
    assert first_difference({"value": "1"}, {"value": "1.0"}) == "/value"


def test_trim_drops_secret_values_and_managed_fields() -> None:
    secret = live(render_secret(OWNER, "Zq9-unique-token-value", "Yx8-internal-value"))
    trimmed = trim(secret)
    assert "data" not in trimmed
    assert "managedFields" not in trimmed["metadata"]
    assert trimmed["tokenHashes"] == {
        "token": token_hash("Zq9-unique-token-value"),
        "vestige-token": token_hash("Yx8-internal-value"),
    }
    assert "Yx8-internal" not in json.dumps(trimmed)
    assert "Zq9-unique" not in json.dumps(trimmed)


def test_owned_by_checks_the_uid() -> None:
    svc = render_service(OWNER, spec())
    assert owned_by(svc, OWNER.uid)
    assert not owned_by(svc, "someone-else")
    assert not owned_by({"metadata": {}}, OWNER.uid)
