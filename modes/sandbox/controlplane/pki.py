"""The certificates and keys of a throwaway real control plane, made fresh at each start.

What kubeadm would lay out under /etc/kubernetes/pki, reduced to what a one-node cluster on one
machine needs: one CA that signs every serving and client certificate, the API server's serving
certificate (reachable as 127.0.0.1 from this machine and as the ``kubernetes`` Service and its
advertised address from pods), one client certificate per component identity (the names the
RBAC and Node authorizers recognise), the kubelet's serving certificate, and the key pair that
signs ServiceAccount tokens. Elliptic-curve keys keep generation to milliseconds.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=30)
PEM = serialization.Encoding.PEM

# Client identities, as (common name, organisations): the subjects the authorizers know.
ADMIN = ("kubetunnel-sandbox-admin", ("system:masters",))
CONTROLLER_MANAGER = ("system:kube-controller-manager", ())
SCHEDULER = ("system:kube-scheduler", ())
KUBE_PROXY = ("system:kube-proxy", ())
APISERVER_KUBELET_CLIENT = ("kube-apiserver-kubelet-client", ("system:masters",))


def node_identity(node: str) -> tuple[str, tuple[str, ...]]:
    """The kubelet's identity, which the Node authorizer and NodeRestriction key on."""
    return f"system:node:{node}", ("system:nodes",)


def _name(common_name: str, organisations: tuple[str, ...] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organisations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclasses.dataclass(frozen=True)
class Pair:
    """A certificate and its key, PEM, with the paths they were written to."""

    cert: Path
    key: Path


class Authority:
    """The cluster CA; ``issue_*`` sign leaf certificates into ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._now = datetime.datetime.now(datetime.UTC)
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = _name("kubetunnel-sandbox-ca")
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._now - datetime.timedelta(minutes=5))
            .not_valid_after(self._now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True,
                    content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )
        self.ca_pem = self.certificate.public_bytes(PEM)
        self.ca_file = self._write("ca.crt", self.ca_pem)

    def _write(self, name: str, data: bytes) -> Path:
        path = self.directory / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return path

    def _leaf(self, stem: str, subject: x509.Name, usage: x509.ObjectIdentifier | None,
              hosts: tuple[str, ...] = (), client: bool = False) -> Pair:
        key = ec.generate_private_key(ec.SECP256R1())
        usages: list[x509.ObjectIdentifier] = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        if usage is not None:
            usages.append(usage)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._now - datetime.timedelta(minutes=5))
            .not_valid_after(self._now + VALIDITY)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        )
        if hosts:
            names: list[x509.GeneralName] = []
            for host in hosts:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    names.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return Pair(self._write(f"{stem}.crt", cert.public_bytes(PEM)),
                    self._write(f"{stem}.key", _key_pem(key)))

    def serving(self, stem: str, common_name: str, hosts: tuple[str, ...]) -> Pair:
        return self._leaf(stem, _name(common_name), ExtendedKeyUsageOID.SERVER_AUTH, hosts)

    def client(self, stem: str, identity: tuple[str, tuple[str, ...]]) -> Pair:
        return self._leaf(stem, _name(*identity), None, client=True)

    def signing_keys(self, stem: str) -> Pair:
        """The ServiceAccount token key pair (cert = public key PEM, key = private key PEM)."""
        key = ec.generate_private_key(ec.SECP256R1())
        public = key.public_key().public_bytes(
            PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        return Pair(self._write(f"{stem}.pub", public), self._write(f"{stem}.key", _key_pem(key)))
