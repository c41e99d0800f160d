"""The Helm chart renders the same objects as the kustomize install for the same settings.

`helm template` of manifests/helm/vestige-operator against `kubectl kustomize` of manifests/ (and
of the namespaced overlay): every object, field by field, after removing only what Helm adds —
the labels ``helm.sh/chart``, ``app.kubernetes.io/{managed-by,instance,version}`` (also in
selectors) and the CRDs' ``helm.sh/resource-policy: keep`` annotation, which are asserted first.
The CRDs come from crds/ in both, so a regenerated or added CRD cannot drift. Plus `helm lint`,
the values schema, and what each value changes.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import tools
from tests.cluster import kubectl_binary

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "manifests" / "helm" / "vestige-operator"
RELEASE = "vestige-operator"
NAMESPACE = "vestige-system"
HELM_LABELS = {
    "helm.sh/chart": "vestige-operator-0.1.0",
    "app.kubernetes.io/managed-by": "Helm",
    "app.kubernetes.io/instance": RELEASE,
    "app.kubernetes.io/version": "0.1.0",
}
#: The chart's defaults are the kustomize base's settings.
BASE_EQUIVALENT: list[str] = []

Key = tuple[str, str, str]


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(tools.helm_binary()), *args], capture_output=True, text=True, check=False, timeout=120
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def render_chart(*args: str) -> list[dict[str, Any]]:
    out = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def render_kustomize(path: Path) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [kubectl_binary(), "kustomize", str(path)], capture_output=True, text=True, check=True, timeout=120
    )
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def by_key(docs: Iterable[dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    out: dict[Key, dict[str, Any]] = {}
    for d in docs:
        key = (d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"])
        assert key not in out, f"{key} rendered twice"
        out[key] = d
    return out


def _strip_labels(labels: dict[str, str] | None, helm_only: bool) -> None:
    if not labels:
        return
    for name, value in HELM_LABELS.items():
        if helm_only:
            assert labels.get(name) == value, f"label {name} missing or wrong: {labels}"
        labels.pop(name, None)


def normalise(doc: dict[str, Any], from_helm: bool) -> dict[str, Any]:
    """``doc`` without what Helm adds (asserting it is there in Helm's rendering)."""
    doc = json.loads(json.dumps(doc))
    meta = doc["metadata"]
    _strip_labels(meta.get("labels"), from_helm)
    if doc["kind"] == "CustomResourceDefinition" and from_helm:
        assert meta["annotations"].pop("helm.sh/resource-policy") == "keep"
        if not meta["annotations"]:
            del meta["annotations"]
    spec = doc.get("spec") or {}
    if doc["kind"] == "Deployment":
        instance = spec["selector"]["matchLabels"].pop("app.kubernetes.io/instance", None)
        template_instance = spec["template"]["metadata"]["labels"].pop("app.kubernetes.io/instance", None)
        if from_helm:
            assert instance == template_instance == RELEASE
    if doc["kind"] == "Service":
        instance = spec["selector"].pop("app.kubernetes.io/instance", None)
        if from_helm:
            assert instance == RELEASE
    if doc["kind"] == "PodDisruptionBudget":
        instance = spec["selector"]["matchLabels"].pop("app.kubernetes.io/instance", None)
        if from_helm:
            assert instance == RELEASE
    return doc


def assert_same(chart: list[dict[str, Any]], kustomize: list[dict[str, Any]]) -> None:
    """Same objects; the one exception is the base's Namespace: Helm stores the release in the
    namespace, so it exists before the chart is installed (README)."""
    assert not [d for d in chart if d["kind"] == "Namespace"]
    c = {k: normalise(v, True) for k, v in by_key(chart).items()}
    k = {k: normalise(v, False) for k, v in by_key(kustomize).items() if k[0] != "Namespace"}
    assert sorted(c) == sorted(k), "the chart and kustomize render different objects"
    for key in c:
        assert c[key] == k[key], f"{key} differs:\nchart: {c[key]}\nkustomize: {k[key]}"


def test_chart_lints_clean() -> None:
    out = helm("lint", "--strict", str(CHART), *BASE_EQUIVALENT)
    assert "0 chart(s) failed" in out.stdout, out.stdout


def test_chart_renders_the_kustomize_base() -> None:
    chart = render_chart(*BASE_EQUIVALENT)
    assert_same(chart, render_kustomize(ROOT / "manifests"))


def test_chart_renders_the_namespaced_overlay() -> None:
    chart = render_chart(*BASE_EQUIVALENT, "--set", "watch.namespaces={agents}")
    assert_same(chart, render_kustomize(ROOT / "manifests" / "overlays" / "namespaced"))


def test_every_generated_crd_is_in_the_chart() -> None:
    """Whatever crds/ holds (new fields, a new CRD) is what the chart installs, not a copy."""
    generated = sorted(p.name for p in (ROOT / "crds").glob("*.yaml") if p.name != "kustomization.yaml")
    assert generated
    chart_crds = {d["metadata"]["name"]: d for d in render_chart() if d["kind"] == "CustomResourceDefinition"}
    files = {}
    for name in generated:
        crd = yaml.safe_load((ROOT / "crds" / name).read_text())
        files[crd["metadata"]["name"]] = crd
    assert sorted(chart_crds) == sorted(files)
    for name, crd in files.items():
        assert chart_crds[name]["spec"] == crd["spec"], f"{name}: the chart's spec differs from crds/"
    assert not [
        d for d in render_chart("--set", "crds.install=false") if d["kind"] == "CustomResourceDefinition"
    ]


def _deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == "Deployment")


def _env(dep: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_values_reach_the_objects(tmp_path: Path) -> None:
    values = {
        "image": {"repository": "registry.example/op", "tag": "1.2.3", "pullPolicy": "Always"},
        "watch": {"namespaces": ["team-a", "team-b"]},
        "operator": {
            "resyncSeconds": 30,
            "logFormat": "plain",
            "logLevel": "DEBUG",
            "defaultVestigeImage": "registry.example/vestige:3.1",
            "defaultBridgeImage": "registry.example/bridge:0.2",
            "defaultLitestreamImage": "registry.example/litestream:0.5.18",
            "maxConcurrentReconciles": 4,
            "verifyResyncs": 5,
            "maxFleetRollouts": 0,
            "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
        },
        "replicaCount": 3,
        "leaderElection": {"leaseDurationSeconds": 20, "renewDeadlineSeconds": 12, "retryPeriodSeconds": 3},
        "podDisruptionBudget": {"minAvailable": 2},
        "metrics": {"port": 9090, "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
        "podAnnotations": {"example.org/scrape": "true"},
        "health": {"port": 9091},
    }
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    docs = render_chart("--values", str(path))
    dep = _deployment(docs)
    pod = dep["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["image"] == "registry.example/op:1.2.3"
    assert container["imagePullPolicy"] == "Always"
    assert container["args"] == []
    assert dep["spec"]["replicas"] == 3
    assert _env(dep) == {
        "POD_NAME": None,  # downward API
        "POD_NAMESPACE": None,
        "VESTIGE_LEASE_NAME": RELEASE,
        "VESTIGE_LEASE_DURATION_SECONDS": "20",
        "VESTIGE_LEASE_RENEW_DEADLINE_SECONDS": "12",
        "VESTIGE_LEASE_RETRY_PERIOD_SECONDS": "3",
        "VESTIGE_LOG_FORMAT": "plain",
        "VESTIGE_RESYNC_SECONDS": "30",
        "VESTIGE_LIVENESS_ENDPOINT": "http://0.0.0.0:9091/healthz",
        "VESTIGE_METRICS_PORT": "9090",
        "VESTIGE_LOG_LEVEL": "DEBUG",
        "VESTIGE_DEFAULT_IMAGE": "registry.example/vestige:3.1",
        "VESTIGE_BRIDGE_IMAGE": "registry.example/bridge:0.2",
        "VESTIGE_LITESTREAM_IMAGE": "registry.example/litestream:0.5.18",
        "VESTIGE_MAX_CONCURRENT_RECONCILES": "4",
        "VESTIGE_VERIFY_RESYNCS": "5",
        "VESTIGE_MAX_FLEET_ROLLOUTS": "0",
        "VESTIGE_NAMESPACES": "team-a,team-b",
        "HTTPS_PROXY": "http://proxy:3128",
    }
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"metrics": 9090, "health": 9091}
    assert container["resources"] == values["resources"]
    assert pod["spec"]["nodeSelector"] == values["nodeSelector"]
    assert pod["spec"]["tolerations"] == values["tolerations"]
    assert pod["spec"]["affinity"] == values["affinity"]
    assert pod["metadata"]["annotations"] == values["podAnnotations"]
    kinds = by_key(docs)
    assert kinds[("PodDisruptionBudget", NAMESPACE, RELEASE)]["spec"]["minAvailable"] == 2
    assert ("Role", NAMESPACE, f"{RELEASE}-leader-election") in kinds  # in the release namespace
    assert ("ClusterRoleBinding", "", RELEASE) not in kinds
    assert ("ClusterRoleBinding", "", f"{RELEASE}-discovery") in kinds
    for ns in ("team-a", "team-b"):
        assert kinds[("RoleBinding", ns, RELEASE)]["roleRef"]["name"] == RELEASE
    svc = kinds[("Service", NAMESPACE, f"{RELEASE}-metrics")]
    assert svc["spec"]["ports"][0]["port"] == 9090
    monitor = kinds[("ServiceMonitor", NAMESPACE, RELEASE)]
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    # The ServiceMonitor selects exactly the metrics Service.
    assert monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()


@pytest.mark.parametrize("install", ["kustomize", "helm"])
def test_two_replicas_one_leader_a_lease_role_and_a_disruption_budget(install: str) -> None:
    """Both installs: two replicas rolled one at a time, the pod's name and namespace for the
    Lease, rights on Leases only in the operator's namespace (a Role), a PodDisruptionBudget of
    one over exactly the operator's pods, and the same readiness for leader and standby."""
    docs = render_chart() if install == "helm" else render_kustomize(ROOT / "manifests")
    kinds = by_key(docs)
    dep = _deployment(docs)
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    env = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["VESTIGE_LEASE_NAME"]["value"] == "vestige-operator"
    assert "VESTIGE_LEADER_ELECTION" not in env  # auto: on in a pod

    role = kinds[("Role", NAMESPACE, "vestige-operator-leader-election")]
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}
    ]
    binding = kinds[("RoleBinding", NAMESPACE, "vestige-operator-leader-election")]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "vestige-operator", "namespace": NAMESPACE}
    ]
    for doc in docs:  # nothing else grants anything on Leases
        if doc["kind"] in ("ClusterRole", "Role") and doc is not role:
            assert not [r for r in doc["rules"] if "coordination.k8s.io" in r.get("apiGroups", [])], doc

    pdb = kinds[("PodDisruptionBudget", NAMESPACE, "vestige-operator")]
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"] == container["livenessProbe"]["httpGet"]


def test_leader_election_and_the_budget_can_be_switched_off() -> None:
    docs = render_chart(
        "--set",
        "replicaCount=1",
        "--set",
        "leaderElection.enabled=false",
        "--set",
        "podDisruptionBudget.enabled=false",
    )
    assert _env(_deployment(docs))["VESTIGE_LEADER_ELECTION"] == "false"
    assert _deployment(docs)["spec"]["replicas"] == 1
    assert not [d for d in docs if d["kind"] == "PodDisruptionBudget"]


def test_metrics_can_be_switched_off() -> None:
    docs = render_chart("--set", "metrics.enabled=false", "--set", "metrics.serviceMonitor.enabled=true")
    assert not [d for d in docs if d["kind"] in ("Service", "ServiceMonitor")]
    dep = _deployment(docs)
    assert _env(dep)["VESTIGE_METRICS_PORT"] == "0"
    assert [p["name"] for p in dep["spec"]["template"]["spec"]["containers"][0]["ports"]] == ["health"]


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("operator.logFormat=xml", "logFormat"),
        ("watch.namespaces={Bad_NS}", "namespaces"),
        ("metrics.port=70000", "port"),
        ("operator.resyncSeconds=0", "resyncSeconds"),
        ("bogus=1", "bogus"),
        ("podLabels.app\\.kubernetes\\.io/name=x", "podLabels"),
        ("replicaCount=0", "replicaCount"),
        ("leaderElection.enabled=false", "replicaCount"),  # two replicas would both reconcile
        ("leaderElection.leaseDurationSeconds=0", "leaseDurationSeconds"),
    ],
)
def test_schema_rejects_bad_values(setting: str, complaint: str) -> None:
    proc = helm("template", RELEASE, str(CHART), "--set", setting, check=False)
    assert proc.returncode != 0, f"{setting} was accepted"
    assert complaint in proc.stderr, proc.stderr


def test_packaged_chart_embeds_the_linked_files(tmp_path: Path) -> None:
    """`helm package` follows files/ symlinks: the .tgz renders exactly what the directory does."""
    helm("package", str(CHART), "--destination", str(tmp_path))
    (archive,) = tmp_path.glob("vestige-operator-*.tgz")
    packaged = helm("template", RELEASE, str(archive), "--namespace", NAMESPACE).stdout
    assert [d for d in yaml.safe_load_all(packaged) if d] == render_chart()


# -- the monitoring pack ---------------------------------------------------------------------------

MONITORING_KINDS = ("ServiceMonitor", "PodMonitor", "PrometheusRule")


def _monitoring(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pack's objects: its kinds, and ConfigMaps carrying Grafana's dashboard label (the
    admission policy's params are a ConfigMap too)."""
    return [
        d
        for d in docs
        if d["kind"] in MONITORING_KINDS
        or (d["kind"] == "ConfigMap" and "grafana_dashboard" in (d["metadata"].get("labels") or {}))
    ]


PACK_ON = (
    "--set",
    "metrics.serviceMonitor.enabled=true",
    "--set",
    "monitoring.podMonitor.enabled=true",
    "--set",
    "monitoring.rules.enabled=true",
    "--set",
    "monitoring.dashboard.enabled=true",
)


def test_the_monitoring_pack_is_off_by_default() -> None:
    assert not _monitoring(render_chart())


def test_the_monitoring_pack_lints_clean() -> None:
    out = helm("lint", "--strict", str(CHART), *PACK_ON)
    assert "0 chart(s) failed" in out.stdout, out.stdout


def test_the_pod_monitor_scrapes_every_agents_bridge() -> None:
    """Its selector matches the pods the operator renders (children.py), its port is the bridge's."""
    from vestige_operator.api import VestigeMemorySpec
    from vestige_operator.children import render_deployment
    from vestige_operator.vocabulary import Images, Owner

    docs = by_key(render_chart(*PACK_ON))
    monitor = docs[("PodMonitor", NAMESPACE, f"{RELEASE}-bridges")]
    owner = Owner(name="agent-a", namespace="agents", uid="uid-a")
    pod = render_deployment(
        owner,
        VestigeMemorySpec(),
        Images(vestige="v:1", bridge="b:1", litestream="example.org/litestream:0.5.18"),
        "hash",
    )["spec"]["template"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    bridge = next(c for c in pod["spec"]["containers"] if c["name"] == "bridge")
    assert endpoint["port"] in [p["name"] for p in bridge["ports"]]
    assert endpoint["path"] == "/metrics"
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    # A namespaced operator: only the namespaces it watches.
    scoped = by_key(render_chart(*PACK_ON, "--set", "watch.namespaces={team-a,team-b}"))
    assert scoped[("PodMonitor", NAMESPACE, f"{RELEASE}-bridges")]["spec"]["namespaceSelector"] == {
        "matchNames": ["team-a", "team-b"]
    }


def test_the_rules_read_the_operator_through_its_service_monitor() -> None:
    docs = by_key(render_chart(*PACK_ON))
    rule = docs[("PrometheusRule", NAMESPACE, RELEASE)]
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert sorted(alerts) == [
        "VestigeAgentNotReady",
        "VestigeBackupOverdue",
        "VestigeBridgeAuthFailureBurst",
        "VestigeOperatorDown",
        "VestigeOperatorNotLeading",
        "VestigeOperatorNotReconciling",
        "VestigeReplicationLagging",
    ]
    # The ServiceMonitor's job is its Service's name; it keeps the metrics' own namespace/name.
    service = docs[("Service", NAMESPACE, f"{RELEASE}-metrics")]
    job = f'job="{service["metadata"]["name"]}"'
    for name in ("VestigeOperatorDown", "VestigeOperatorNotLeading", "VestigeOperatorNotReconciling"):
        assert f'{job}, namespace="{NAMESPACE}"' in alerts[name]["expr"], alerts[name]["expr"]
    # The per-resource series carry the VestigeMemory's namespace: selected by job alone.
    for name in ("VestigeAgentNotReady", "VestigeBackupOverdue", "VestigeReplicationLagging"):
        assert f"{{{job}" in alerts[name]["expr"] and NAMESPACE not in alerts[name]["expr"]
    (endpoint,) = docs[("ServiceMonitor", NAMESPACE, RELEASE)]["spec"]["endpoints"]
    assert endpoint["honorLabels"] is True


def test_rule_settings_reach_the_rules(tmp_path: Path) -> None:
    values = {
        "monitoring": {
            "rules": {
                "enabled": True,
                "labels": {"release": "prom"},
                "alertLabels": {"team": "platform"},
                "operatorJob": "custom-job",
                "backupGraceSeconds": 7200,
                "replicationLagSeconds": 30,
                "authFailureBurst": 5,
                "authFailureWindow": "10m",
                "agentNotReadyFor": "30m",
                "notLeadingFor": "3m",
            }
        }
    }
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    rule = next(d for d in render_chart("--values", str(path)) if d["kind"] == "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "prom"
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert all(r["labels"]["team"] == "platform" for r in alerts.values())
    assert 'job="custom-job"' in alerts["VestigeOperatorDown"]["expr"]
    assert alerts["VestigeBackupOverdue"]["expr"].endswith("> 7200")
    assert "> 30 unless on (namespace, name)" in alerts["VestigeReplicationLagging"]["expr"]
    assert "[10m]" in alerts["VestigeBridgeAuthFailureBurst"]["expr"]
    assert alerts["VestigeBridgeAuthFailureBurst"]["expr"].endswith("> 5")
    assert alerts["VestigeAgentNotReady"]["for"] == "30m"
    assert alerts["VestigeOperatorNotLeading"]["for"] == "3m"


def test_the_dashboard_config_map_is_for_grafanas_sidecar() -> None:
    docs = render_chart(*PACK_ON, "--set", "monitoring.dashboard.annotations.grafana_folder=Vestige")
    (cm,) = [d for d in _monitoring(docs) if d["kind"] == "ConfigMap"]
    assert cm["metadata"]["namespace"] == NAMESPACE
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Vestige"}
    dashboard = json.loads(cm["data"]["vestige-operator.json"])
    assert dashboard["uid"] == "vestige-operator"
    assert dashboard["panels"]
    elsewhere = render_chart(
        "--set", "monitoring.dashboard.enabled=true", "--set", "monitoring.dashboard.namespace=grafana"
    )
    assert [d["metadata"]["namespace"] for d in _monitoring(elsewhere) if d["kind"] == "ConfigMap"] == [
        "grafana"
    ]


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("monitoring.rules.backupGraceSeconds=-1", "backupGraceSeconds"),
        ("monitoring.rules.operatorDownFor=five", "operatorDownFor"),
        ("monitoring.rules.authFailureBurst=0", "authFailureBurst"),
        ("monitoring.podMonitor.interval=30", "interval"),
        ("monitoring.dashboard.namespace=Bad_NS", "namespace"),
        ("monitoring.bogus=1", "bogus"),
    ],
)
def test_schema_rejects_bad_monitoring_values(setting: str, complaint: str) -> None:
    proc = helm("template", RELEASE, str(CHART), "--set", setting, check=False)
    assert proc.returncode != 0, f"{setting} was accepted"
    assert complaint in proc.stderr, proc.stderr


# -- the admission policy (docs/admission.md) ------------------------------------------------------

BASE = ROOT / "manifests" / "base"
POLICY_NAME = f"{RELEASE}-policy"


def _policy_docs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "ConfigMap")
    return {d["kind"]: d for d in docs if d["kind"] in kinds}


def test_the_admission_policy_is_part_of_both_default_installs() -> None:
    for docs in (render_chart(), render_kustomize(ROOT / "manifests")):
        policy = _policy_docs(docs)
        assert sorted(policy) == [
            "ConfigMap",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ]
        binding = policy["ValidatingAdmissionPolicyBinding"]
        # Cluster-scoped objects carry no namespace (kustomize would add one with a `namespace:`).
        assert "namespace" not in binding["metadata"]
        assert "namespace" not in policy["ValidatingAdmissionPolicy"]["metadata"]
        assert binding["spec"]["policyName"] == POLICY_NAME
        assert binding["spec"]["validationActions"] == ["Deny"]
        assert binding["spec"]["paramRef"] == {
            "name": POLICY_NAME,
            "namespace": NAMESPACE,
            "parameterNotFoundAction": "Deny",
        }
        assert "matchResources" not in binding["spec"]  # every namespace
        assert policy["ConfigMap"]["metadata"]["namespace"] == NAMESPACE


def _render_kustomization(tmp_path: Path, body: dict[str, Any]) -> list[dict[str, Any]]:
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(body))
    return render_kustomize(tmp_path)


def test_the_admission_policy_can_be_switched_off(tmp_path: Path) -> None:
    """Helm: admissionPolicy.enabled=false; kustomize: the component no-admission-policy. Both
    leave everything else as it was."""
    chart = render_chart("--set", "admissionPolicy.enabled=false")
    assert not _policy_docs(chart)
    body = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        # kustomize takes relative paths only
        "resources": [os.path.relpath(ROOT / "manifests", tmp_path)],
        "components": [os.path.relpath(ROOT / "manifests" / "components" / "no-admission-policy", tmp_path)],
    }
    kustomize = _render_kustomization(tmp_path, body)
    assert not _policy_docs(kustomize)
    assert_same(chart, kustomize)


def test_admission_values_reach_the_objects(tmp_path: Path) -> None:
    values = {
        "fullnameOverride": "vop-x",
        "watch": {"namespaces": ["team-a", "team-b"]},
        "admissionPolicy": {
            "validationActions": ["Warn", "Audit"],
            "params": {
                "images": ["ghcr.io/vestige-operator/*", "registry.example/agents/*"],
                "ingressHosts": "*.{namespace}.apps.example.com",
                "allowAnonymous": "true",
            },
        },
    }
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    policy = _policy_docs(render_chart("--values", str(path)))
    binding = policy["ValidatingAdmissionPolicyBinding"]
    assert policy["ValidatingAdmissionPolicy"]["metadata"]["name"] == "vop-x-policy"
    assert binding["metadata"]["name"] == binding["spec"]["policyName"] == "vop-x-policy"
    assert binding["spec"]["validationActions"] == ["Warn", "Audit"]
    assert binding["spec"]["paramRef"]["name"] == "vop-x-policy"
    # Namespaced: the policy applies where this operator acts.
    assert binding["spec"]["matchResources"] == {
        "namespaceSelector": {
            "matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a", "team-b"]}
            ]
        }
    }
    data = policy["ConfigMap"]["data"]
    defaults = yaml.safe_load((BASE / "admission-params.yaml").read_text())["data"]
    assert data == {
        **defaults,
        "images": "ghcr.io/vestige-operator/*,registry.example/agents/*",
        "ingressHosts": "*.{namespace}.apps.example.com",
        "allowAnonymous": "true",
    }


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("admissionPolicy.params.bogus=1", "bogus"),
        ("admissionPolicy.validationActions={Maybe}", "validationActions"),
        ("admissionPolicy.enabled=yes", "enabled"),
    ],
)
def test_schema_rejects_bad_admission_values(setting: str, complaint: str) -> None:
    proc = helm("template", RELEASE, str(CHART), "--set", setting, check=False)
    assert proc.returncode != 0, f"{setting} was accepted"
    assert complaint in proc.stderr, proc.stderr
