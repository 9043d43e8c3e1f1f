"""Differential test: our chain verdict against Debian's `openssl verify`, case by case.

The oracle is `openssl verify -CAfile BUNDLE -untrusted SERVED LEAF` from Debian's openssl
package (not our code, and not the OpenSSL build inside the cryptography wheel that our
verdict runs on). No `-purpose`: names and EKU are judged separately (monitor/checks.py,
monitor/eku.py), see docs/chain-verdict.md. Any disagreement must be listed in
KNOWN_DISAGREEMENTS with its reason (and in that doc); a listed one that stops disagreeing
fails too, so the list stays true.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from expressway_certd.monitor import lint
from expressway_certd.monitor.probe import TrustStore
from tests.chain_corpus import Case, corpus
from tests.helpers import need_binary

pytestmark = pytest.mark.integration

CASES = corpus()

# case name -> why our verdict differs from Debian's openssl verify (none today)
KNOWN_DISAGREEMENTS: dict[str, str] = {}


def _pem(certs: tuple[x509.Certificate, ...] | list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def openssl_verify(case: Case, workdir: Path) -> tuple[bool, str]:
    """Debian's verdict, and its error line."""
    openssl = need_binary("openssl")
    bundle, untrusted, leaf = workdir / "bundle.pem", workdir / "served.pem", workdir / "leaf.pem"
    bundle.write_bytes(_pem(case.anchors))
    leaf.write_bytes(_pem(case.served[:1]))
    args = [openssl, "verify", "-CAfile", str(bundle)]
    if len(case.served) > 1:
        untrusted.write_bytes(_pem(case.served[1:]))
        args += ["-untrusted", str(untrusted)]
    done = subprocess.run(
        [*args, str(leaf)], capture_output=True, text=True, timeout=30, check=False
    )
    errors = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.startswith("error")]
    return done.returncode == 0, (errors or [""])[0]


def our_verdict(case: Case, workdir: Path) -> tuple[bool, str | None, tuple[lint.LintFinding, ...]]:
    bundle = workdir / "ours.pem"
    bundle.write_bytes(_pem(case.anchors))
    verdict = TrustStore([bundle]).verdict(list(case.served), datetime.now(UTC))
    return verdict.ok, verdict.error, verdict.lint


def test_corpus_is_broad():
    assert len(CASES) >= 25
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_verdict_matches_openssl(case: Case, tmp_path: Path):
    oracle_ok, oracle_error = openssl_verify(case, tmp_path)
    ours_ok, ours_error, _ = our_verdict(case, tmp_path)
    if case.name in KNOWN_DISAGREEMENTS:
        assert ours_ok != oracle_ok, "no longer disagrees: drop it from KNOWN_DISAGREEMENTS"
        return
    assert ours_ok == oracle_ok, f"openssl: {oracle_error or 'OK'}; ours: {ours_error or 'OK'}"
    assert (ours_error is None) == ours_ok


def _case(name: str) -> Case:
    return next(c for c in CASES if c.name == name)


@pytest.mark.parametrize(
    ("name", "finding"),
    [
        ("root without keyUsage (v3_ca)", lint.CA_WITHOUT_KEY_USAGE),
        ("intermediate without keyUsage", lint.CA_WITHOUT_KEY_USAGE),
        ("leaf with CN only (no SAN)", lint.LEAF_WITHOUT_SAN),
        ("SHA-1 signature on the intermediate", lint.WEAK_SIGNATURE),
        ("SHA-1 signature on the leaf", lint.WEAK_SIGNATURE),
        ("RSA-1024 leaf key", lint.WEAK_KEY),
        ("RSA-1024 intermediate key", lint.WEAK_KEY),
        ("Ed25519 throughout", lint.NOT_WEBPKI),
        ("root without basicConstraints (keyCertSign only)", lint.NOT_WEBPKI),
    ],
)
def test_stricter_rules_are_lint_never_failure(name: str, finding: str, tmp_path: Path):
    ok, error, findings = our_verdict(_case(name), tmp_path)
    assert ok and error is None
    assert finding in {f.finding for f in findings}, findings


@pytest.mark.parametrize(
    "name",
    [
        "good three-level chain",
        "ECDSA P-384 throughout (SHA-384)",
        "SHA-1 self-signature on the root",  # an anchor's self-signature is never checked
    ],
)
def test_clean_chains_have_no_lint(name: str, tmp_path: Path):
    ok, _, findings = our_verdict(_case(name), tmp_path)
    assert ok and findings == ()


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("intermediate missing from served chain", "issuer CN=Corpus Issuing of CN=expe.example.com is not served and not in the trust bundle"),
        ("bundle holds only the intermediate (no root)", "issuer CN=Corpus Root of CN=Corpus Issuing is not served and not in the trust bundle"),
        ("self-signed leaf not in the bundle", "self-signed certificate CN=expe.example.com is not in the trust bundle"),
        ("served root not in the bundle", "self-signed root CN=Corpus Root is served but not in the trust bundle"),
        ("expired intermediate", "certificate has expired (certificate CN=Corpus Issuing, depth 1)"),
        ("intermediate keyUsage lacks keyCertSign", "invalid CA certificate (certificate CN=Corpus Issuing, depth 1)"),
    ],
)  # fmt: skip
def test_failures_say_what_is_missing(name: str, words: str, tmp_path: Path):
    ok, error, _ = our_verdict(_case(name), tmp_path)
    assert not ok and error is not None
    assert words in error
    assert "candidates exhausted" not in error
