"""Transport security settings, secret masking and the development PKI (no processes)."""

from __future__ import annotations

import ipaddress

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from resplit.config import ServiceSettings, parse_settings, redact_url, transport_problem
from resplit.launcher.certs import make_dev_pki
from resplit.rpc.security import Security, SecurityError, read_token


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@host:6379/0", "redis://:***@host:6379/0"),
        (
            "rediss://user:s3cret@host:6380/1?ssl_ca_certs=/c.pem",
            "rediss://user:***@host:6380/1?ssl_ca_certs=/c.pem",
        ),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ],
)
def test_redact_url_masks_the_password(url, shown):
    assert redact_url(url) == shown


def test_a_bad_redis_url_is_reported_without_its_password():
    with pytest.raises(ValueError) as info:
        parse_settings(ServiceSettings, ["--redis-url", "http://:s3cret@host"])
    assert "s3cret" not in str(info.value) and "***" in str(info.value)


def test_transport_needs_tls_or_an_explicit_insecure(monkeypatch):
    monkeypatch.delenv("RESPLIT_INSECURE", raising=False)
    assert "no TLS configured" in transport_problem(parse_settings(ServiceSettings, []))
    assert transport_problem(parse_settings(ServiceSettings, ["--insecure"])) is None
    half = parse_settings(ServiceSettings, ["--tls-cert", "c.pem"])
    assert "--tls-key" in transport_problem(half)
    no_ca = parse_settings(ServiceSettings, ["--tls-cert", "c.pem", "--tls-key", "k.pem"])
    assert "--tls-ca" in transport_problem(no_ca)
    assert transport_problem(parse_settings(ServiceSettings, [*no_ca_args(), "--tls-ca", "ca.pem"])) is None


def no_ca_args() -> list[str]:
    return ["--tls-cert", "c.pem", "--tls-key", "k.pem"]


def test_token_is_never_a_flag():
    with pytest.raises(ValueError):
        parse_settings(ServiceSettings, ["--token", "abc"])


def test_token_from_file_or_environment(tmp_path):
    path = tmp_path / "token"
    path.write_text("from-file\n")
    assert read_token(str(path), {"RESPLIT_TOKEN": "from-env"}) == "from-file"
    assert read_token("", {"RESPLIT_TOKEN": "from-env"}) == "from-env"
    assert read_token("", {}) is None


def test_pki_certificates_serve_both_ends_and_name_their_hosts(tmp_path):
    out = make_dev_pki(tmp_path / "pki", ["edge-1"], ["localhost", "127.0.0.1", "10.0.0.7"])
    cert = x509.load_pem_x509_certificate((out / "edge-1.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"edge-1", "localhost"}
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("10.0.0.7"),
    }
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(usage)
    assert (out / "edge-1-key.pem").stat().st_mode & 0o077 == 0
    assert (out / "token").stat().st_mode & 0o077 == 0
    security = Security.from_pki_dir(out)
    assert security.tls and security.token
    assert security.token not in repr(security)


def test_unreadable_material_names_the_file_not_its_contents(tmp_path):
    with pytest.raises(SecurityError, match=r"missing\.pem"):
        Security.from_files(tmp_path / "missing.pem")
    with pytest.raises(SecurityError, match="only sent over TLS"):
        Security.from_files(token="abc")
