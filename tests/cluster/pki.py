"""Certificates and keys for the local control plane (generated with `cryptography`).

One CA signs the API server's serving certificate and one client certificate per component,
so each component authenticates as itself and RBAC applies to it as in a real cluster.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=365)

# name -> (common name, organisation or None). The controller manager and scheduler use the
# identities the bootstrap RBAC policy grants; kwok simulates kubelets for every node and acts
# as a cluster admin (it is a test double for the node agents, not part of the product).
CLIENTS: dict[str, tuple[str, str | None]] = {
    "admin": ("vestige-test-admin", "system:masters"),
    "kube-controller-manager": ("system:kube-controller-manager", None),
    "kube-scheduler": ("system:kube-scheduler", None),
    "kwok": ("kwok-controller", "system:masters"),
    # The real node (tests/cluster/node.py): the kubelet as a node (Node authorizer and
    # NodeRestriction apply), kube-proxy with the bootstrap policy's system:node-proxier binding,
    # CoreDNS with its own read-only ClusterRole, and the API server's client identity towards
    # kubelets (logs, exec, port-forward), which the kubelet's webhook authorization checks.
    "kubelet": ("system:node:vestige-node-0", "system:nodes"),
    "kube-proxy": ("system:kube-proxy", None),
    "coredns": ("vestige-test:coredns", None),
    "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", "system:masters"),
}
#: Names and addresses the kubelet's serving certificate covers (tests/cluster/node.py).
KUBELET_SERVING = ("vestige-node-0", "10.254.0.2")


@dataclass(frozen=True)
class Pki:
    dir: Path

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def serving_cert(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.dir / "apiserver.key"

    @property
    def kubelet_serving_cert(self) -> Path:
        return self.dir / "kubelet-serving.crt"

    @property
    def kubelet_serving_key(self) -> Path:
        return self.dir / "kubelet-serving.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"

    def client_cert(self, name: str) -> Path:
        return self.dir / f"{name}.crt"

    def client_key(self, name: str) -> Path:
        return self.dir / f"{name}.key"


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _sign(
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    ca_key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    *,
    is_ca: bool = False,
    usage: list[x509.ObjectIdentifier] | None = None,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if is_ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def generate(directory: Path, service_ip: str, extra_ips: tuple[str, ...] = ()) -> Pki:
    """Write a CA, the API server serving pair, client pairs and the service-account key pair."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(directory)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("vestige-test-ca")
    ca = _sign(ca_name, ca_key.public_key(), ca_key, ca_name, is_ca=True)
    _write_key(directory / "ca.key", ca_key)
    pki.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    serving_key = ec.generate_private_key(ec.SECP256R1())
    dns = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
    dns.append("kubernetes.default.svc.cluster.local")
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ("127.0.0.1", service_ip, *extra_ips)]
    serving = _sign(
        _name("kube-apiserver"),
        serving_key.public_key(),
        ca_key,
        ca_name,
        usage=[ExtendedKeyUsageOID.SERVER_AUTH],
        sans=sans,
    )
    _write_key(pki.serving_key, serving_key)
    pki.serving_cert.write_bytes(serving.public_bytes(serialization.Encoding.PEM))

    for name, (cn, org) in CLIENTS.items():
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _sign(
            _name(cn, org), key.public_key(), ca_key, ca_name, usage=[ExtendedKeyUsageOID.CLIENT_AUTH]
        )
        _write_key(pki.client_key(name), key)
        pki.client_cert(name).write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    node_name, node_ip = KUBELET_SERVING
    kubelet_key = ec.generate_private_key(ec.SECP256R1())
    kubelet = _sign(
        _name(f"system:node:{node_name}", "system:nodes"),
        kubelet_key.public_key(),
        ca_key,
        ca_name,
        usage=[ExtendedKeyUsageOID.SERVER_AUTH],
        sans=[x509.DNSName(node_name), x509.IPAddress(ipaddress.ip_address(node_ip))],
    )
    _write_key(pki.kubelet_serving_key, kubelet_key)
    pki.kubelet_serving_cert.write_bytes(kubelet.public_bytes(serialization.Encoding.PEM))

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(pki.sa_key, sa_key)
    pki.sa_pub.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pki
