"""A development PKI: one CA, a certificate per service, a client certificate, a token.

``resplit up`` makes one in ``<state_dir>/tls`` for the local stack;
``make certs`` (``resplit certs certs``) makes one under ``certs/`` for
docker compose. Every certificate is good for both TLS server and client
authentication (a service is the client of the services it dials: mutual
TLS) and names the hosts it is reached by (SANs): its service name, the
extra names given, ``localhost`` and ``127.0.0.1``.

For development only: the CA key sits next to the certificates. Production
deployments bring certificates from their own CA.

Layout: ``ca.pem``, ``ca-key.pem``, ``<name>.pem`` + ``<name>-key.pem`` per
name, ``client.pem`` + ``client-key.pem``, ``token`` (keys and token 0600
unless ``readable_keys``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTS = ("localhost", "127.0.0.1")
VALID_DAYS = 825
CLIENT = "client"


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "resplit development"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _san(hosts: Iterable[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _write(path: Path, data: bytes, secret: bool, readable: bool) -> None:
    mode = 0o600 if secret and not readable else 0o644
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_or_make_ca(out: Path, readable: bool) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = out / "ca.pem", out / "ca-key.pem"
    if cert_path.exists() and key_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return x509.load_pem_x509_certificate(cert_path.read_bytes()), key
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("resplit development CA"))
        .issuer_name(_name("resplit development CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(key_path, _key_pem(key), secret=True, readable=False)  # the CA key stays private
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), secret=False, readable=readable)
    return cert, key


def issue(
    out: Path,
    name: str,
    hosts: Iterable[str],
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    readable: bool = False,
) -> tuple[Path, Path]:
    """Write ``<name>.pem`` and ``<name>-key.pem`` signed by ``ca``; returns their paths."""
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(_san([name, *hosts]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = out / f"{name}.pem", out / f"{name}-key.pem"
    _write(key_path, _key_pem(key), secret=True, readable=readable)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), secret=False, readable=readable)
    return cert_path, key_path


def make_dev_pki(
    out: Path,
    names: Iterable[str],
    hosts: Iterable[str] = DEFAULT_HOSTS,
    readable_keys: bool = False,
) -> Path:
    """CA (kept if ``out`` has one), a certificate per name plus ``client``, and a token; returns ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    ca = _load_or_make_ca(out, readable_keys)
    hosts = list(hosts)
    for name in [*names, CLIENT]:
        issue(out, name, hosts, ca, readable_keys)
    token = out / "token"
    if not token.exists():
        _write(token, secrets.token_urlsafe(32).encode() + b"\n", secret=True, readable=readable_keys)
    return out
