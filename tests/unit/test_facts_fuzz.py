"""Fuzz (hypothesis) of what parses certificates from outside: certificate facts and the chain
verdict, on arbitrary and mutated DER and PEM. The only outcomes allowed are CertFacts or
CertParseError (facts) and a ChainVerdict (verdict): never another exception.

`FUZZ_EXAMPLES` (environment) raises the number of examples per property for a long run; the
default keeps `make test` quick. docs/security.md records the long run's figures.
"""

from __future__ import annotations

import base64
import contextlib
import os
import tempfile
import textwrap
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from expressway_certd.monitor.errors import CertParseError
from expressway_certd.monitor.facts import (
    CertFacts,
    facts_from_x509,
    load_certificates,
    parse_facts,
)
from expressway_certd.monitor.probe import ChainVerdict, TrustStore
from tests.chain_corpus import corpus

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


CASES = corpus()


@cache
def seeds() -> tuple[bytes, ...]:
    """Real certificates of every shape the corpus has (RSA, EC, Ed25519, odd extensions)."""
    ders: dict[bytes, None] = {}
    for case in CASES:
        for cert in (*case.served, *case.anchors):
            ders[cert.public_bytes(serialization.Encoding.DER)] = None
    return tuple(ders)


@cache
def trust() -> TrustStore:
    """The corpus's anchors, so mutated chains get far into OpenSSL's path building."""
    bundle = Path(tempfile.mkdtemp()) / "bundle.pem"
    bundle.write_bytes(
        b"".join(c.public_bytes(serialization.Encoding.PEM) for k in CASES for c in k.anchors)
    )
    return TrustStore([bundle])


def _pem(der: bytes) -> bytes:
    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode(), 64))
    return f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n".encode()


@st.composite
def mutated_der(draw: st.DrawFn) -> bytes:
    der = bytearray(draw(st.sampled_from(seeds())))
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
        if not der:
            break
        at = draw(st.integers(0, len(der) - 1))
        if op == "flip":
            der[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            der[at] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0x81, 0x82, 0xFF]))
        elif op == "truncate":
            del der[at:]
        elif op == "insert":
            der[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            del der[at : at + draw(st.integers(1, 16))]
    return bytes(der)


def check_facts(data: bytes) -> None:
    try:
        result = parse_facts(data, source="fuzz")
    except CertParseError:
        return
    assert isinstance(result, CertFacts)


def check_verdict(data: bytes) -> None:
    try:
        certs = load_certificates(data, source="fuzz")
    except CertParseError:
        return
    for cert in certs:
        with contextlib.suppress(CertParseError):
            facts_from_x509(cert)
    verdict = trust().verdict(certs, datetime.now(UTC))
    assert isinstance(verdict, ChainVerdict)
    assert verdict.ok == (verdict.error is None)


@FUZZ
@given(st.binary(max_size=2048))
def test_arbitrary_bytes(data: bytes):
    check_facts(data)
    check_verdict(data)


@FUZZ
@given(mutated_der())
def test_mutated_der(data: bytes):
    check_facts(data)
    check_verdict(data)


@FUZZ
@given(mutated_der())
def test_mutated_der_in_pem(data: bytes):
    check_facts(_pem(data))
    check_verdict(_pem(data))


@FUZZ
@given(st.lists(mutated_der(), min_size=1, max_size=4), st.data())
def test_mutated_chains(ders: list[bytes], data: st.DataObject):
    # a chain: a real leaf first, then mutated certificates as "intermediates"
    leaf = data.draw(st.sampled_from(seeds()))
    check_verdict(b"".join(_pem(d) for d in [leaf, *ders]))


@FUZZ
@given(st.text(max_size=512))
def test_pem_like_text(text: str):
    data = f"-----BEGIN CERTIFICATE-----\n{text}\n-----END CERTIFICATE-----\n"
    check_facts(data.encode("utf-8", "surrogatepass"))
    check_verdict(data.encode("utf-8", "surrogatepass"))
