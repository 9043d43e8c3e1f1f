"""`[ca.NAME]` tables: one valid config per connector kind, and errors that name key and fix."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

from expressway_certd.config import parse_cas, parse_config
from expressway_certd.monitor.errors import ConfigError
from expressway_certd.renewers.ca.acme_config import ACMEConfig
from expressway_certd.renewers.ca.adcs_config import ADCSConfig
from expressway_certd.renewers.ca.est_config import ESTConfig

ACME = """
[ca.le]
kind = "acme"
directory = "https://acme.example.net/directory"
email = "pki@example.com"
eab_kid = "kid-1"
eab_hmac = "env:EAB_HMAC"
profile = "tlsserver"
[ca.le.rfc2136]
server = "10.0.0.53"
zone = "example.com"
tsig_key = "certd"
tsig_secret = "file:tsig.secret"
"""

EST = """
[ca.corp-est]
kind = "est"
url = "https://est.example.com/.well-known/est/expressway"
username = "certd"
password = "env:EST_PASSWORD"
ekus = ["serverAuth", "clientAuth"]
"""

ADCS = """
[ca.corp-adcs]
kind = "adcs"
url = "https://ca01.corp.example.com/certsrv"
template = "CollabServerClient"
auth = "ntlm"
username = 'CORP\\svc-certd'
password = "env:ADCS_PASSWORD"
"""


def cas(text: str, file: Path = Path("/etc/certd.toml")) -> dict[str, object]:
    return dict(parse_cas(file, tomllib.loads(text)["ca"]))


def test_each_kind_parses_to_its_config() -> None:
    parsed = cas(ACME + EST + ADCS)
    acme, est, adcs = parsed["le"], parsed["corp-est"], parsed["corp-adcs"]
    assert (
        isinstance(acme, ACMEConfig) and acme.challenge == "dns-01" and acme.profile == "tlsserver"
    )
    assert acme.rfc2136 is not None and (acme.rfc2136.server, acme.rfc2136.port) == (
        "10.0.0.53",
        53,
    )
    assert acme.rfc2136.zone == "example.com."
    assert isinstance(est, ESTConfig) and est.ekus == frozenset({"serverAuth", "clientAuth"})
    assert est.http_auth == "basic"
    assert isinstance(adcs, ADCSConfig) and adcs.username == "CORP\\svc-certd"
    assert [s.ref for s in acme.secrets()] == ["env:EAB_HMAC", "file:tsig.secret"]
    assert "EST_PASSWORD" in repr(est) and "EAB_HMAC" in repr(acme)


def test_est_http_digest() -> None:
    est = cas(EST.replace('username = "certd"', 'username = "certd"\nhttp_auth = "Digest"'))
    assert isinstance(est["corp-est"], ESTConfig) and est["corp-est"].http_auth == "digest"


def test_est_http_auth_needs_a_username() -> None:
    text = (
        '[ca.x]\nkind = "est"\nurl = "https://e/.well-known/est"\nclient_cert = "/c.pem"\n'
        'client_key = "/k.pem"\nhttp_auth = "digest"'
    )
    with pytest.raises(ConfigError, match=r"ca.x.http_auth: set only with username \+ password"):
        parse_cas(Path("/etc/certd.toml"), tomllib.loads(text)["ca"], check_files=False)


def test_whole_config_carries_the_cas() -> None:
    config = parse_config(Path("/etc/certd.toml"), tomllib.loads(EST))
    assert isinstance(config.cas["corp-est"], ESTConfig)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[ca.x]\nkind = "scep"', r"ca.x.kind: must be one of acme, est, adcs"),
        (
            '[ca.x]\nkind = "est"\nurl = "http://est/.well-known/est"\nusername = "u"\npassword = "env:P"',
            r"ca.x.url: must be an https:// URL",
        ),
        (
            '[ca.x]\nkind = "est"\nurl = "https://est.example.com/est"\nusername = "u"\npassword = "env:P"',
            r"must include '/.well-known/est'",
        ),
        (
            '[ca.x]\nkind = "est"\nurl = "https://e/.well-known/est"\nusername = "u"\npassword = "hunter2"',
            r"ca.x.password: must be a secret reference",
        ),
        ('[ca.x]\nkind = "est"\nurl = "https://e/.well-known/est"', r"EST needs credentials"),
        (
            '[ca.x]\nkind = "est"\nurl = "https://e/.well-known/est"\nusername = "u"\npassword = "env:P"\nhttp_auth = "ntlm"',
            r"ca.x.http_auth: must be one of basic, digest; got 'ntlm'",
        ),
        (
            '[ca.x]\nkind = "adcs"\nurl = "https://ca/certsrv"\ntemplate = "T"\nauth = "digest"\nusername = "u"\npassword = "env:P"',
            r"ca.x.auth: must be one of basic, ntlm, kerberos",
        ),
        (
            '[ca.x]\nkind = "adcs"\nurl = "https://ca/certsrv"\nauth = "basic"\nusername = "u"\npassword = "env:P"',
            r"ca.x.template: is required",
        ),
        (
            '[ca.x]\nkind = "adcs"\nurl = "https://ca/certsrv"\ntemplate = "T"\nauth = "ntlm"',
            r"needs username",
        ),
        (
            '[ca.x]\nkind = "acme"\ndirectory = "https://a/dir"',
            r"ca.x.rfc2136: is required with challenge = 'dns-01'",
        ),
        (
            '[ca.x]\nkind = "acme"\ndirectory = "https://a/dir"\nchallenge = "hook"',
            r"ca.x.hook: is required with challenge = 'hook'",
        ),
        (
            '[ca.x]\nkind = "acme"\ndirectory = "https://a/dir"\nchallenge = "http-01"\neab_kid = "k"',
            r"ca.x.eab_hmac: set both or neither",
        ),
        (
            '[ca.x]\nkind = "acme"\ndirectory = "https://a/dir"\nchallenge = "tls-alpn-01"',
            r"ca.x.challenge: must be one of dns-01, http-01, hook",
        ),
        (
            '[ca.x]\nkind = "acme"\ndirectory = "https://a/dir"\nchalenge = "http-01"',
            r"ca.x.chalenge: unknown key; did you mean 'challenge'\?",
        ),
        (
            '[ca.x]\nkind = "acme"\ndirectory = "https://a/dir"\n[ca.x.rfc2136]\nserver = "ns1"\ntsig_key = "k"\ntsig_secret = "env:T"\ntsig_algorithm = "md5"',
            r"ca.x.rfc2136.tsig_algorithm: must be one of",
        ),
        (
            '[ca.x]\nkind = "est"\nurl = "https://e/.well-known/est"\nusername = "u"\npassword = "env:P"\nekus = ["codeSigning"]',
            r"ca.x.ekus: must list",
        ),
    ],
)
def test_mistakes_name_file_key_and_fix(text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected) as info:
        cas(text)
    assert str(info.value).startswith("/etc/certd.toml: ca.x")
    assert "hunter2" not in str(info.value)


def test_hook_is_split_like_a_shell_command() -> None:
    parsed = cas(
        '[ca.h]\nkind = "acme"\ndirectory = "https://a/dir"\nchallenge = "hook"\nhook = "/usr/local/bin/dns-hook --zone \'corp zone\'"'
    )
    acme = parsed["h"]
    assert isinstance(acme, ACMEConfig)
    assert acme.hook == ("/usr/local/bin/dns-hook", "--zone", "corp zone")


def test_every_example_in_the_ca_docs_is_a_valid_config(tmp_path: Path) -> None:
    doc = (Path(__file__).parents[2] / "docs" / "ca-connectors.md").read_text()
    blocks = re.findall(r"```toml\n(.*?)```", doc, re.S)
    assert len(blocks) >= 5
    for referenced in set(re.findall(r"/etc/expressway-certd/([\w.-]+)", doc)):
        (tmp_path / referenced).write_text("placeholder\n")
    kinds = set()
    for block in blocks:
        for ca in cas(block.replace("/etc/expressway-certd/", f"{tmp_path}/")).values():
            kinds.add(type(ca).__name__)
    assert kinds == {"ACMEConfig", "ESTConfig", "ADCSConfig", "ManualConfig"}


CLIENT_CA_TARGET = """
[[expressway]]
name = "c1"
address = "c1.example.com"
role = "c"
[expressway.renewal]
ca = "public"
client_ca = "{client_ca}"
"""


def test_the_client_certificate_has_its_own_ca() -> None:
    text = ACME.replace("[ca.le", "[ca.public") + EST
    text += CLIENT_CA_TARGET.format(client_ca="corp-est")
    config = parse_config(Path("/etc/certd.toml"), tomllib.loads(text))
    renewal = config.target("c1").renewal
    assert renewal is not None and renewal.client_ca == "corp-est"
    assert (renewal.ca_for("server"), renewal.ca_for("client")) == ("public", "corp-est")
    without = dataclasses.replace(renewal, client_ca=None)
    assert without.ca_for("client") == "public"  # default: the server certificate's CA


def test_a_client_ca_that_is_not_configured_is_named() -> None:
    text = ACME.replace("[ca.le", "[ca.public") + EST
    text += CLIENT_CA_TARGET.format(client_ca="nowhere")
    with pytest.raises(ConfigError, match=r"\(c1\)\.renewal\.client_ca: no \[ca\.nowhere\]"):
        parse_config(Path("/etc/certd.toml"), tomllib.loads(text))
