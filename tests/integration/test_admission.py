"""The admission policy of the default install (docs/admission.md) on the real API server.

A tenant who may create VestigeMemory resources in one namespace and nothing else (a Role and a
RoleBinding; the user is impersonated) tries each class of what a pod of its own would be refused:
foreign images, Secrets the operator manages or the platform did not list, ipBlock and
namespaceSelector peers, no NetworkPolicy, anonymous agents, Service types and annotations,
Ingress hosts, classes and annotations, scheduling fields and pod metadata. Each is refused with
a message that names the field and the param that loosens it, and admitted once the platform
loosens that param in the one place (the params ConfigMap); what the loosening does not cover
stays refused.

The objects are those `kubectl kustomize manifests/` renders (the default install; the chart
renders the same, tests/unit/test_chart.py), with three changes that keep this shared cluster
usable by the tests running beside these: the names get a suffix, the ConfigMap lives in a
namespace of this module, and the binding matches only the namespaces of this module (a label).
The cluster-wide binding as installed is exercised by test_install.py and test_helm.py.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from tests.cluster import kubectl_binary
from tests.integration.conftest import ROOT, Kubectl
from tests.integration.helpers import get, wait_until

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("crd_installed")]

LABEL = "vestige.dev/admission-test"
DEFAULT_PARAMS_NAME = "vestige-operator-policy"


@dataclass
class Policy:
    kubectl: Kubectl
    name: str
    params_namespace: str
    configmap: dict[str, Any]
    suffix: str

    @property
    def defaults(self) -> dict[str, str]:
        return dict(self.configmap["data"])

    @property
    def where(self) -> str:
        return f"ConfigMap {self.params_namespace}/{self.name}"

    def set(self, **data: str) -> None:
        """Loosen (or tighten) the params: the one place a platform team edits."""
        body = json.dumps({"data": data})
        self.kubectl("-n", self.params_namespace, "patch", "configmap", self.name, "--type=merge", "-p", body)

    def reset(self) -> None:
        self.kubectl(
            "apply", "--server-side", "--force-conflicts", "--field-manager=vestige-tests",
            "-f", "-", input=json.dumps(self.configmap),
        )  # fmt: skip


def _default_install() -> list[dict[str, Any]]:
    proc = subprocess.run(
        [kubectl_binary(), "kustomize", str(ROOT / "manifests")],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.fixture(scope="module")
def policy(kubectl: Kubectl) -> Iterator[Policy]:
    docs = _default_install()
    kinds = {d["kind"]: d for d in docs if d["metadata"]["name"] == DEFAULT_PARAMS_NAME}
    vap = copy.deepcopy(kinds["ValidatingAdmissionPolicy"])
    binding = copy.deepcopy(kinds["ValidatingAdmissionPolicyBinding"])
    configmap = copy.deepcopy(kinds["ConfigMap"])
    assert binding["spec"]["paramRef"]["name"] == configmap["metadata"]["name"]
    assert "matchResources" not in binding["spec"]  # installed: every namespace

    suffix = uuid.uuid4().hex[:6]
    name = f"{DEFAULT_PARAMS_NAME}-{suffix}"
    params_ns = f"t-admission-params-{suffix}"
    kubectl("create", "namespace", params_ns)
    vap["metadata"]["name"] = name
    binding["metadata"]["name"] = name
    binding["spec"]["policyName"] = name
    binding["spec"]["paramRef"].update(name=name, namespace=params_ns)
    binding["spec"]["matchResources"] = {"namespaceSelector": {"matchLabels": {LABEL: suffix}}}
    configmap["metadata"].update(name=name, namespace=params_ns)
    made = Policy(kubectl, name, params_ns, configmap, suffix)
    made.reset()
    for obj in (vap, binding):
        kubectl("apply", "--server-side", "--field-manager=vestige-tests", "-f", "-", input=json.dumps(obj))
    try:
        yield made
    finally:
        kubectl("delete", "validatingadmissionpolicybinding", name, "--ignore-not-found", check=False)
        kubectl("delete", "validatingadmissionpolicy", name, "--ignore-not-found", check=False)
        kubectl("delete", "namespace", params_ns, "--wait=false", check=False)


@dataclass
class Tenant:
    """A user who may only manage VestigeMemory (and VestigeBackup) resources in ``namespace``."""

    kubectl: Kubectl
    policy: Policy
    namespace: str
    user: str
    made: list[str] = field(default_factory=list)

    def create(
        self, name: str, spec: dict[str, Any], dry_run: bool = True
    ) -> subprocess.CompletedProcess[str]:
        doc = {"apiVersion": "vestige.dev/v1alpha1", "kind": "VestigeMemory", "metadata": {"name": name}}
        doc["spec"] = spec
        args = ["-n", self.namespace, "create", "-f", "-"] + (["--dry-run=server"] if dry_run else [])
        return self.kubectl(*args, input=json.dumps(doc), check=False, as_user=self.user)

    def refused(self, spec: dict[str, Any], *fragments: str) -> str:
        """The policy's message refusing ``spec`` (waiting for params to be in force)."""
        last: list[str] = []

        def denied() -> bool:
            res = self.create("probe", spec)
            last[:] = [res.stderr]
            return (
                res.returncode != 0
                and self.policy.name in res.stderr
                and all(f in res.stderr for f in fragments)
            )

        wait_until(denied, 30, f"the policy to refuse {spec} with {fragments}")
        return last[0]

    def admitted(self, spec: dict[str, Any]) -> None:
        """Admitted (once the params are in force): a dry run, then a real create as the tenant."""
        last: list[str] = []

        def passes() -> bool:
            res = self.create("probe", spec)
            last[:] = [res.stderr]
            return res.returncode == 0

        try:
            wait_until(passes, 30, f"{spec} to be admitted")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{last[0] if last else ''}") from None
        name = f"ok-{len(self.made)}"
        res = self.create(name, spec, dry_run=False)
        assert res.returncode == 0, res.stderr
        self.made.append(name)


@pytest.fixture
def tenant(kubectl: Kubectl, namespace: str, policy: Policy) -> Iterator[Tenant]:
    kubectl("label", "namespace", namespace, f"{LABEL}={policy.suffix}")
    user = f"tenant-{namespace}"
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "memories", "namespace": namespace},
        "rules": [
            {
                "apiGroups": ["vestige.dev"],
                "resources": ["vestigememories", "vestigebackups"],
                "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
            }
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "memories", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "memories"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }
    for obj in (role, binding):
        kubectl("apply", "-f", "-", input=json.dumps(obj))
    # The tenant can do nothing else here (the boundary the policy completes).
    for verb, resource in [("create", "pods"), ("get", "secrets"), ("create", "deployments.apps")]:
        answer = kubectl("auth", "can-i", verb, resource, "-n", namespace, f"--as={user}", check=False)
        assert answer.stdout.strip() == "no", (verb, resource)
    made = Tenant(kubectl, policy, namespace, user)
    yield made
    policy.reset()


def test_the_policy_type_checks_clean(policy: Policy, kubectl: Kubectl) -> None:
    """The API server compiled every expression against the CRD's schema without a warning."""

    def checked() -> dict[str, Any] | None:
        obj = json.loads(kubectl("get", "validatingadmissionpolicy", policy.name, "-o", "json").stdout)
        status = obj.get("status") or {}
        return status if status.get("observedGeneration") == obj["metadata"]["generation"] else None

    status = wait_until(checked, 60, "the policy's type checking")
    assert not (status.get("typeChecking") or {}).get("expressionWarnings"), status


# -- each class: refused by default, admitted after loosening its one param ------------------------


@dataclass
class Case:
    spec: dict[str, Any]  # refused under the default params
    field: str  # the refusal names it (and its value)
    param: str  # ... and the param that loosens it
    loosen: dict[str, str]
    allowed: dict[str, Any] | None = None  # admitted after loosening (default: spec)
    still_refused: list[dict[str, Any]] = field(default_factory=list)
    given: dict[str, str] = field(default_factory=dict)  # params set first (other classes)


def _env(container: str, secret: str) -> dict[str, Any]:
    ref = {"secretKeyRef": {"name": secret, "key": "value"}}
    return {container: {"env": [{"name": "FROM_SECRET", "valueFrom": ref}]}}


def _peers(*peers: dict[str, Any]) -> dict[str, Any]:
    return {"networkPolicy": {"from": list(peers)}}


def _ingress(**fields: Any) -> dict[str, Any]:
    return {"ingress": {"enabled": True, **fields}}


def _pod(**fields: Any) -> dict[str, Any]:
    return {"pod": fields}


NODE_DEFAULTS = "kubernetes.io/os=*,kubernetes.io/arch=*"


def cases(ns: str) -> dict[str, Case]:
    host = f"memory.{ns}.apps.example.com"
    own_hosts = {"ingressHosts": "*.{namespace}.apps.example.com"}
    return {
        "vestige-image": Case(
            {"vestige": {"image": "docker.io/evil/vestige:3"}},
            "spec.vestige.image docker.io/evil/vestige:3",
            "images",
            {"images": "ghcr.io/vestige-operator/*,docker.io/evil/*"},
            still_refused=[{"vestige": {"image": "docker.io/evil-twin/vestige:3"}}],
        ),
        "bridge-image-lookalike": Case(
            {"bridge": {"image": "ghcr.io/vestige-operator-evil/bridge:1"}},
            "spec.bridge.image ghcr.io/vestige-operator-evil/bridge:1",
            "images",
            {"images": "ghcr.io/vestige-operator/*,ghcr.io/vestige-operator-evil/bridge:1"},
            still_refused=[{"bridge": {"image": "ghcr.io/vestige-operator-evil/bridge:2"}}],
        ),
        "env-secret": Case(
            _env("bridge", "db-password"),
            "spec.bridge.env[FROM_SECRET].valueFrom.secretKeyRef.name db-password",
            "envSecretNames",
            {"envSecretNames": "db-*"},
            still_refused=[_env("vestige", "cloud-credentials")],
        ),
        "ipblock": Case(
            _peers({"ipBlock": {"cidr": "10.20.0.0/16"}}),
            "spec.networkPolicy.from ipBlock 10.20.0.0/16",
            "ipBlockCIDRs",
            {"ipBlockCIDRs": "10.0.0.0/8, fd00::/8"},
            still_refused=[
                _peers({"ipBlock": {"cidr": "0.0.0.0/0"}}),
                _peers({"ipBlock": {"cidr": "0.0.0.0/1"}}, {"ipBlock": {"cidr": "128.0.0.0/1"}}),
                _peers({"ipBlock": {"cidr": "::/0"}}),
                _peers({"ipBlock": {"cidr": "10.0.0.0/7"}}),
                # (an ipBlock without cidr never reaches the policy: the CRD requires cidr)
                _peers({"podSelector": {}}, {"ipBlock": {"cidr": "10.0.0.0/7", "except": []}}),
            ],
        ),
        "ipblock-everything": Case(
            _peers({"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}}),
            "spec.networkPolicy.from ipBlock 0.0.0.0/0",
            "ipBlockCIDRs",
            {"ipBlockCIDRs": "0.0.0.0/0"},
            still_refused=[_peers({"ipBlock": {"cidr": "::/0"}})],
        ),
        "namespace-selector": Case(
            _peers({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}),
            "spec.networkPolicy.from namespaceSelector",
            "peerNamespaces",
            {"peerNamespaces": "monitoring"},
            still_refused=[
                _peers({"namespaceSelector": {}}),
                _peers({"namespaceSelector": {"matchLabels": {"team": "monitoring"}}}),
                _peers(
                    {
                        "namespaceSelector": {
                            "matchExpressions": [
                                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["x"]}
                            ]
                        }
                    }
                ),
            ],
        ),
        "namespace-selector-any": Case(
            _peers({"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": "agent"}}}),
            "spec.networkPolicy.from namespaceSelector",
            "peerNamespaces",
            {"peerNamespaces": "*"},
        ),
        "network-policy-off": Case(
            {"networkPolicy": {"enabled": False}},
            "spec.networkPolicy.enabled: false",
            "allowNetworkPolicyDisabled",
            {"allowNetworkPolicyDisabled": "true"},
        ),
        "anonymous": Case(
            {"bridge": {"allowAnonymous": True}},
            "spec.bridge.allowAnonymous: true",
            "allowAnonymous",
            {"allowAnonymous": "true"},
        ),
        "service-type": Case(
            {"service": {"type": "LoadBalancer"}},
            "spec.service.type LoadBalancer",
            "serviceTypes",
            {"serviceTypes": "ClusterIP,LoadBalancer"},
            still_refused=[{"service": {"type": "NodePort"}}],
        ),
        "service-annotations": Case(
            {"service": {"annotations": {"service.beta.kubernetes.io/aws-load-balancer-internal": "true"}}},
            "spec.service.annotations service.beta.kubernetes.io/aws-load-balancer-internal",
            "serviceAnnotations",
            {"serviceAnnotations": "service.beta.kubernetes.io/*"},
            still_refused=[
                {"service": {"annotations": {"external-dns.alpha.kubernetes.io/hostname": "bank.com"}}}
            ],
        ),
        "ingress-host": Case(
            _ingress(host=host),
            f"spec.ingress.host {host}",
            "ingressHosts",
            own_hosts,
            still_refused=[
                _ingress(),  # no host: every host of the controller
                _ingress(host="memory.other-team.apps.example.com"),
                _ingress(host=f"{ns}.apps.example.com"),
                _ingress(host=f"*.{ns}.apps.example.com"),
                _ingress(host="bank.example.com"),
            ],
        ),
        "ingress-class": Case(
            _ingress(host=host, className="internal-admin"),
            "spec.ingress.className internal-admin",
            "ingressClassNames",
            {"ingressClassNames": "internal-*"},
            given=own_hosts,
            still_refused=[_ingress(host=host, className="public")],
        ),
        "ingress-annotations": Case(
            _ingress(host=host, annotations={"cert-manager.io/cluster-issuer": "letsencrypt"}),
            "spec.ingress.annotations cert-manager.io/cluster-issuer",
            "ingressAnnotations",
            {"ingressAnnotations": "cert-manager.io/*"},
            given=own_hosts,
            still_refused=[
                _ingress(host=host, annotations={"nginx.ingress.kubernetes.io/configuration-snippet": "x"})
            ],
        ),
        "node-selector": Case(
            _pod(nodeSelector={"pool": "agents", "kubernetes.io/os": "linux"}),
            "spec.pod.nodeSelector pool=agents",
            "nodeSelectors",
            {"nodeSelectors": f"{NODE_DEFAULTS},pool=agents"},
            still_refused=[
                _pod(nodeSelector={"pool": "gpu"}),
                _pod(nodeSelector={"node-role.kubernetes.io/control-plane": ""}),
            ],
        ),
        "tolerations": Case(
            _pod(
                tolerations=[
                    {"key": "dedicated", "operator": "Equal", "value": "agents", "effect": "NoSchedule"}
                ]
            ),
            "spec.pod.tolerations dedicated",
            "tolerationKeys",
            {"tolerationKeys": "dedicated"},
            still_refused=[
                _pod(tolerations=[{"operator": "Exists"}]),  # every taint
                _pod(tolerations=[{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}]),
            ],
        ),
        "affinity": Case(
            _pod(affinity={"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}}),
            "spec.pod.affinity nodeAffinity",
            "affinityTypes",
            {"affinityTypes": "nodeAffinity"},
            still_refused=[
                _pod(
                    affinity={
                        "podAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": [
                                {"labelSelector": {"matchLabels": {"app": "payments"}}, "topologyKey": "x"}
                            ]
                        }
                    }
                )
            ],
        ),
        "priority-class": Case(
            _pod(priorityClassName="agent-memory"),
            "spec.pod.priorityClassName agent-memory",
            "priorityClassNames",
            {"priorityClassNames": "agent-*"},
            still_refused=[_pod(priorityClassName="system-cluster-critical")],
        ),
        "pod-labels": Case(
            _pod(labels={"team": "research"}),
            "spec.pod.labels team",
            "podLabels",
            {"podLabels": "team"},
            still_refused=[_pod(labels={"app": "payments"})],  # would join another app's Service
        ),
        "pod-annotations": Case(
            _pod(annotations={"example.com/owner": "research"}),
            "spec.pod.annotations example.com/owner",
            "podAnnotations",
            {"podAnnotations": "example.com/*"},
            still_refused=[_pod(annotations={"sidecar.istio.io/inject": "false"})],
        ),
    }


@pytest.mark.parametrize("case_id", list(cases("ns")))
def test_each_class_is_refused_until_its_param_allows_it(
    tenant: Tenant, policy: Policy, case_id: str
) -> None:
    case = cases(tenant.namespace)[case_id]
    if case.given:
        policy.set(**case.given)
    message = tenant.refused(case.spec, case.field, f"param {case.param} in {policy.where}")
    assert "denied request" in message, message
    assert get(tenant.kubectl, tenant.namespace, "vmem", "probe") is None

    policy.set(**case.loosen)  # the one place
    tenant.admitted(case.allowed or case.spec)
    for spec in case.still_refused:
        tenant.refused(spec, f"param {case.param} in {policy.where}")


# -- Secrets -----------------------------------------------------------------------------------------


def _backup(credentials: str, ca: str | None = None) -> dict[str, Any]:
    s3: dict[str, Any] = {"bucket": "agent-backups", "credentialsSecret": {"name": credentials}}
    if ca:
        s3["caSecret"] = {"name": ca}
    return {"backup": {"destination": {"s3": s3}}}


def test_secret_fields_take_only_names_the_platform_lists(tenant: Tenant, policy: Policy) -> None:
    # Default ("*"): any Secret that the operator does not manage (the operator then uses it only
    # if the platform labelled it usable: docs/admission.md).
    tenant.admitted({"auth": {"existingSecret": {"name": "byo-token"}}})
    policy.set(secretNames="backup-*,byo-token")
    tenant.refused(
        {"auth": {"existingSecret": {"name": "byo-other"}}}, "spec.auth.existingSecret.name byo-other"
    )
    fields = {
        "spec.backup.destination.s3.credentialsSecret.name team-s3": _backup("team-s3"),
        "spec.backup.destination.s3.caSecret.name team-ca": _backup("backup-s3", ca="team-ca"),
        "spec.ingress.tls.secretName other-tls": {
            "ingress": {"host": "a.example.com", "tls": {"secretName": "other-tls"}}
        },
        "spec.pod.imagePullSecrets other-registry": _pod(imagePullSecrets=[{"name": "other-registry"}]),
        "spec.restore.fromBackup.destination.s3.credentialsSecret.name team-s3": {
            "restore": {
                "fromBackup": {"source": "agents/other", "latest": True, **_backup("team-s3")["backup"]}
            }
        },
    }
    for fragment, spec in fields.items():
        tenant.refused(spec, fragment, f"param secretNames in {policy.where}")
    tenant.admitted(
        {"auth": {"existingSecret": {"name": "byo-token"}}, **_backup("backup-s3", ca="backup-ca")}
    )
    policy.set(secretNames="backup-*,byo-*")
    tenant.admitted({"auth": {"existingSecret": {"name": "byo-other"}}})


def test_secrets_the_operator_manages_are_never_referenced(tenant: Tenant, policy: Policy) -> None:
    """`<name>-auth` and `<name>-vestige` of any memory (another agent's token, Vestige's internal
    token): refused even when the platform allows every name."""
    policy.set(secretNames="*", envSecretNames="*")
    tenant.admitted(_env("bridge", "shared-settings"))  # the params are in force
    for fragment, spec in {
        "spec.auth.existingSecret.name victim-auth": {"auth": {"existingSecret": {"name": "victim-auth"}}},
        "spec.auth.existingSecret.name probe-auth": {"auth": {"existingSecret": {"name": "probe-auth"}}},
        "spec.bridge.env[FROM_SECRET].valueFrom.secretKeyRef.name victim-vestige": _env(
            "bridge", "victim-vestige"
        ),
        "spec.vestige.env[FROM_SECRET].valueFrom.secretKeyRef.name victim-auth": _env(
            "vestige", "victim-auth"
        ),
        "spec.pod.imagePullSecrets victim-auth": _pod(imagePullSecrets=[{"name": "victim-auth"}]),
        "spec.backup.destination.s3.credentialsSecret.name victim-vestige": _backup("victim-vestige"),
    }.items():
        message = tenant.refused(spec, fragment)
        assert "no param loosens this" in message, message


# -- the defaults, the examples, updates, no params ----------------------------------------------------


def _example(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "manifests" / "examples" / name).read_text())


def test_the_defaults_admit_what_needs_no_platform_decision(tenant: Tenant) -> None:
    tenant.admitted({})
    tenant.admitted(_example("minimal.yaml").get("spec") or {})
    tenant.admitted(_example("restore.yaml")["spec"])  # credentialsSecret: a name the platform allows
    tenant.admitted(
        {
            # the operator's own images written out
            "vestige": {"image": "ghcr.io/vestige-operator/vestige:3"},
            "bridge": {"image": "ghcr.io/vestige-operator/vestige-bridge:0.1.0", "allowAnonymous": False},
            "auth": {"existingSecret": {"name": "byo-token", "key": "bearer"}},
            "service": {"type": "ClusterIP"},
            "networkPolicy": {
                "enabled": True,
                "from": [
                    {"podSelector": {"matchLabels": {"role": "agent"}}},
                    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": tenant.namespace}}},
                ],
            },
            # an Ingress that is not enabled is never created: its fields are not checked
            "ingress": {"enabled": False, "host": "anything.example.com", "annotations": {"a": "b"}},
            "pod": {"nodeSelector": {"kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}},
        }
    )


FULL_PARAMS = re.compile(r"<!-- full\.yaml params -->\s*```yaml\n(.*?)```", re.S)


def test_the_full_example_needs_exactly_the_documented_params(tenant: Tenant, policy: Policy) -> None:
    """manifests/examples/full.yaml sets every field: refused by the defaults, admitted with the
    loosening docs/admission.md shows for it."""
    full = _example("full.yaml")
    tenant.refused(full["spec"], "param ")
    match = FULL_PARAMS.search((ROOT / "docs" / "admission.md").read_text())
    assert match, "docs/admission.md shows no params for full.yaml"
    params = yaml.safe_load(match.group(1))["admissionPolicy"]["params"]
    assert set(params) <= set(policy.defaults)
    policy.set(**{k: ",".join(v) if isinstance(v, list) else v for k, v in params.items()})
    tenant.admitted(full["spec"])
    # VestigeBackup objects are not matched: they name a memory of their namespace, nothing else.
    backup = _example("backup-now.yaml")
    res = tenant.kubectl(
        "-n", tenant.namespace, "create", "--dry-run=server", "-f", "-", input=json.dumps(backup)
    )
    assert res.returncode == 0, res.stderr


def test_updates_are_checked_but_metadata_and_status_never_are(
    tenant: Tenant, policy: Policy, kubectl: Kubectl
) -> None:
    policy.set(serviceTypes="ClusterIP,LoadBalancer")
    tenant.admitted({"service": {"type": "LoadBalancer"}})
    name = tenant.made[-1]
    policy.reset()  # the platform tightens: LoadBalancer is no longer allowed
    tenant.refused({"service": {"type": "LoadBalancer"}}, "spec.service.type LoadBalancer")

    def as_tenant(*args: str) -> subprocess.CompletedProcess[str]:
        return kubectl("-n", tenant.namespace, *args, check=False, as_user=tenant.user)

    # Day two still works on the now non-compliant resource: a token rotation, a label.
    res = as_tenant("annotate", "vmem", name, "vestige.dev/rotate-token=2026-12-03T18:00:00Z")
    assert res.returncode == 0, res.stderr
    assert as_tenant("label", "vmem", name, "team=research").returncode == 0
    # The operator's status writes (the status subresource) are not matched either.
    status = json.dumps({"status": {"phase": "Pending"}})
    res = kubectl(
        "-n", tenant.namespace, "patch", "vmem", name, "--subresource=status", "--type=merge", "-p", status
    )
    assert res.returncode == 0, res.stderr
    # A spec change is checked: into another violation refused, into compliance admitted.
    res = as_tenant("patch", "vmem", name, "--type=merge", "-p", json.dumps({"spec": {"suspend": True}}))
    assert res.returncode != 0 and "spec.service.type LoadBalancer" in res.stderr, res.stderr
    patch = {"spec": {"service": {"type": "ClusterIP"}, "bridge": {"allowAnonymous": True}}}
    res = as_tenant("patch", "vmem", name, "--type=merge", "-p", json.dumps(patch))
    assert res.returncode != 0 and "spec.bridge.allowAnonymous" in res.stderr, res.stderr
    res = as_tenant(
        "patch", "vmem", name, "--type=merge", "-p", json.dumps({"spec": {"service": {"type": "ClusterIP"}}})
    )
    assert res.returncode == 0, res.stderr


def test_without_its_params_the_policy_refuses_everything(
    tenant: Tenant, policy: Policy, kubectl: Kubectl
) -> None:
    tenant.admitted({})
    kubectl("-n", policy.params_namespace, "delete", "configmap", policy.name)

    def denied() -> str | None:
        res = tenant.create("probe", {})
        return res.stderr if res.returncode != 0 else None

    message = wait_until(denied, 30, "the policy to refuse without its params")
    assert policy.name in message, message
    # the tenant fixture puts the params back
