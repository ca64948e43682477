"""Key material of a deployment: the TLS certificates of the SuperLink and the SuperNodes'
authentication keys, made with the `cryptography` package (no openssl invocation to get right).

TLS: a private certificate authority (`ca.crt`, `ca.key`) signs the SuperLink's server
certificate (`server.pem`, `server.key`) for every host name / IP address hospitals will dial;
hospitals receive `ca.crt` only, so they talk to no one else. Authentication: each hospital
makes its own EC key pair in OpenSSH format (what `flower-supernode
--auth-supernode-private-key` reads); only the public half (`NAME.pub`) travels to the
coordinator, who registers it with `flwr supernode register`. Private keys are written 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fedsynth.atomic import atomic_write_bytes

VALID_DAYS = 365


@dataclass(frozen=True)
class ServerCertificates:
    """Paths of the files `flower-superlink --ssl-*` and `--root-certificates` take."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


@dataclass(frozen=True)
class NodeKey:
    """A SuperNode's key pair: the private key stays at the hospital, `public` is registered."""

    private: Path
    public: Path


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    atomic_write_bytes(path, data)
    os.chmod(path, mode)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedsynth federation"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def make_server_certificates(out: Path, hosts: Sequence[str]) -> ServerCertificates:
    """A new CA and a server certificate valid for `hosts` (names and/or IPs) under `out`.

    Refuses to overwrite an existing CA: hospitals already trust it, and a new one would
    silently lock every SuperNode out.
    """
    if not hosts:
        raise ValueError("give at least one host name or IP address the SuperLink is reached at")
    out = Path(out)
    paths = ServerCertificates(
        out / "ca.crt", out / "ca.key", out / "server.pem", out / "server.key"
    )
    if paths.ca_cert.exists():
        raise FileExistsError(f"{paths.ca_cert}: a CA already exists here; use another --out")
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=VALID_DAYS)

    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("fedsynth CA"))
        .issuer_name(_name("fedsynth CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA384())
    )
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA384())
    )
    pem_key = serialization.PrivateFormat.TraditionalOpenSSL
    none = serialization.NoEncryption()
    for key, path in ((ca_key, paths.ca_key), (server_key, paths.server_key)):
        _write(path, key.private_bytes(serialization.Encoding.PEM, pem_key, none), 0o600)
    _write(paths.server_cert, server_cert.public_bytes(serialization.Encoding.PEM))
    _write(paths.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))
    return paths


def make_node_key(out: Path, name: str) -> NodeKey:
    """An EC P-384 key pair in OpenSSH format: `out/NAME.key` (0600) and `out/NAME.pub`."""
    out = Path(out)
    paths = NodeKey(out / f"{name}.key", out / f"{name}.pub")
    if paths.private.exists():
        raise FileExistsError(f"{paths.private}: this SuperNode already has a key")
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    _write(paths.private, private, 0o600)
    _write(paths.public, public + f" fedsynth-{name}\n".encode())
    return paths
