"""Device clients share their verifying TLS context per CA file (renewers/device_http.py):
a storm of renewals opens several clients per box, and every context loaded its own copy
of the CA file (of the system roots, about 0.8 MiB of OpenSSL memory each, without
`api_ca_file`)."""

from __future__ import annotations

import os
import ssl

import pytest
from expressway_certd_lab.pki import CA, cert_pem

from expressway_certd.monitor.errors import ConfigError
from expressway_certd.renewers.device_http import HttpApi, tls_context


def api(target: str, ca_file) -> HttpApi:
    return HttpApi(
        target=target, base_url="https://127.0.0.1:1", username="admin", password="secret",
        ca_file=ca_file, timeout=5.0, retries=0, backoff=0.1, product="Expressway",
    )  # fmt: skip


def _cn(cert: dict) -> str:
    return dict(rdn[0] for rdn in cert["subject"])["commonName"]


def test_clients_of_the_same_ca_file_share_one_context(tmp_path):
    bundle = CA.create("Shared Root").write_bundle(tmp_path / "ca.pem")
    other = CA.create("Other Root").write_bundle(tmp_path / "other.pem")
    a, b = api("e1", bundle), api("e2", bundle)
    assert a._ssl is b._ssl  # one context for the fleet behind one CA file
    assert tls_context("e3", bundle) is a._ssl
    assert tls_context("e4", other) is not a._ssl  # another file, its own context
    ctx = tls_context("e1", bundle)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert [_cn(c) for c in ctx.get_ca_certs()] == ["Shared Root"]


def test_clients_of_the_system_store_share_one_context():
    ctx = tls_context("e1", None)
    assert tls_context("e2", None) is ctx
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname


def test_a_rewritten_ca_file_is_loaded_again(tmp_path):
    path = tmp_path / "ca.pem"
    first = CA.create("First Root")
    path.write_bytes(cert_pem(first.cert))
    before = tls_context("e1", path)
    second = CA.create("Second Root With A Longer Name")
    path.write_bytes(cert_pem(second.cert))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    after = tls_context("e1", path)
    assert after is not before
    assert [_cn(c) for c in after.get_ca_certs()] == ["Second Root With A Longer Name"]


def test_an_unreadable_ca_file_names_the_key_and_the_fix(tmp_path):
    path = tmp_path / "missing.pem"
    with pytest.raises(ConfigError, match=r"e1: api_ca_file .*missing\.pem cannot be loaded"):
        tls_context("e1", path)
    path.write_text("not a certificate")
    with pytest.raises(ConfigError, match="cannot be loaded as a PEM CA bundle"):
        tls_context("e1", path)
