"""`appforge keys DIR`: what a deployment needs to run with tokens and TLS, made once.

In DIR: `jwt-secret` (HS256, APPFORGE_AUTH_JWT_SECRET_FILE), a private CA (`ca.pem`, the
APPFORGE_TLS_CA_FILE of every client, and `ca.key`) and one certificate signed by it
(`tls.pem`, `tls.key`: APPFORGE_TLS_CERT_FILE / _KEY_FILE) naming every host given plus
`localhost` and 127.0.0.1, good for serving and for calling (mutual TLS). A file that exists
is kept, so running it again on every start changes nothing. Keys are readable by their
owner only.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ALWAYS = ("localhost", "127.0.0.1")


@dataclass(frozen=True, kw_only=True)
class Pki:
    """PEM files: the CA's certificate, a leaf's certificate and key."""

    ca: Path
    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _private(path: Path, content: bytes) -> None:
    """Written readable by its owner only, from the first byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(content)


def _alternative_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys([*hosts, *ALWAYS]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def write_pki(
    directory: Path,
    *,
    hosts: Sequence[str] = (),
    valid: datetime.timedelta = datetime.timedelta(days=365),
    leaf: str = "tls",
    ca_name: str = "appforge private CA",
) -> Pki:
    """A new CA and one leaf signed by it (naming `hosts`, localhost and 127.0.0.1, for
    serving and calling), written under `directory` as ca.pem/ca.key, LEAF.pem/LEAF.key."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(ca_name))
        .issuer_name(_name(ca_name))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + valid)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0] if hosts else "appforge"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + valid)
        .add_extension(x509.SubjectAlternativeName(_alternative_names(hosts)), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(
        ca=directory / "ca.pem", cert=directory / f"{leaf}.pem", key=directory / f"{leaf}.key"
    )
    _private(directory / "ca.key", _pem_key(ca_key))
    pki.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    _private(pki.key, _pem_key(key))
    pki.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return pki


def make_keys(directory: Path, hosts: Sequence[str], days: int = 365) -> list[str]:
    """What `appforge keys` does; the lines it prints (what was made, what was kept)."""
    directory.mkdir(parents=True, exist_ok=True)
    said: list[str] = []
    secret = directory / "jwt-secret"
    if secret.exists():
        said.append(f"kept {secret}")
    else:
        _private(secret, secrets.token_hex(32).encode() + b"\n")
        said.append(f"made {secret} (APPFORGE_AUTH_JWT_SECRET_FILE)")
    if all((directory / name).exists() for name in ("ca.pem", "tls.pem", "tls.key")):
        said.append(
            f"kept {directory / 'ca.pem'}, {directory / 'tls.pem'}, {directory / 'tls.key'}"
        )
    else:
        pki = write_pki(directory, hosts=hosts, valid=datetime.timedelta(days=days))
        names = ", ".join(dict.fromkeys([*hosts, *ALWAYS]))
        said.append(f"made {pki.ca} (APPFORGE_TLS_CA_FILE), valid {days} days")
        said.append(
            f"made {pki.cert} and {pki.key} (APPFORGE_TLS_CERT_FILE / _KEY_FILE) for {names}"
        )
    return said
