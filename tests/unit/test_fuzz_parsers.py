"""Property tests of every parser of outside input (issue 13 part 8): EST answers (PKCS#7
certs-only bags in base64, PEM or DER; csrattrs), AD CS certsrv pages, Expressway REST answers
(JSON bodies, PEM in JSON, /api/raml) and Unified CM answers (trust-store JSON, SOAP).

The only outcomes allowed: a result, or an error from the CertdError tree. Any other exception
(IndexError, RecursionError, AttributeError, a bare ValueError ...) fails the test; the inputs
that broke a parser once are kept as `@example`s. Example counts are bounded and no deadline is
set, so a loaded 2-core machine does not flake; a hang would trip pytest-timeout.

Each test counts the inputs it tried in TRIED; `pytest -s` prints the totals (docs/security.md
quotes them).
"""

from __future__ import annotations

import base64
import json
import os
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from expressway_certd.monitor.config_base import Secret
from expressway_certd.monitor.errors import CertdError
from expressway_certd.renewers.ca.adcs import read_certsrv_page
from expressway_certd.renewers.ca.est import ESTConnector, decode_body, parse_csrattrs
from expressway_certd.renewers.ca.est_config import ESTConfig
from expressway_certd.renewers.ca.httpclient import Reply as CAReply
from expressway_certd.renewers.cucm import read_fault_string, read_service_states, trust_pems
from expressway_certd.renewers.device_http import DeviceReply
from expressway_certd.renewers.expressway import (
    acme_enabled_from,
    csr_already_pending,
    parse_raml,
    pem_text,
    switch_value,
    version_tuple,
)

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TRIED: Counter[str] = Counter()


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    for name, count in sorted(TRIED.items()):
        print(f"fuzz inputs tried: {name}: {count}")
    print(f"fuzz inputs tried: total: {sum(TRIED.values())}")


def outcome(name: str, parse: Callable[[], object]) -> object:
    """Run one parse; a CertdError is an allowed outcome, anything else propagates (fails)."""
    TRIED[name] += 1
    try:
        return parse()
    except CertdError as exc:
        return exc


# ---- material ------------------------------------------------------------------------------


def _cert() -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fuzz CA")])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


CERT = _cert()
PEM = CERT.public_bytes(serialization.Encoding.PEM)
P7 = pkcs7.serialize_certificates([CERT], serialization.Encoding.DER)


def mutated(seed: bytes) -> st.SearchStrategy[bytes]:
    """`seed` truncated, with bytes flipped, or with junk spliced in."""

    def apply(data: bytes, cut: int, flips: list[tuple[int, int]], junk: bytes) -> bytes:
        out = bytearray(data[: max(0, len(data) - cut)])
        for pos, value in flips:
            if out:
                out[pos % len(out)] = value
        middle = len(out) // 2
        return bytes(out[:middle]) + junk + bytes(out[middle:])

    return st.builds(
        apply,
        st.just(seed),
        st.integers(0, len(seed)),
        st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
        st.binary(max_size=16),
    )


JSON_LEAF = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
JSON = st.recursive(
    JSON_LEAF,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
DEEP = "[" * 100_000 + "]" * 100_000
DEEP_OBJ = '{"a":' * 50_000 + "1" + "}" * 50_000


# ---- EST -----------------------------------------------------------------------------------


def _est() -> ESTConnector:
    config = ESTConfig(
        "fuzz-est", "https://est.invalid/.well-known/est", username="u", password=Secret("p")
    )
    return ESTConnector(config)


EST = _est()


def _ca_reply(body: bytes, content_type: str | None, encoding: str | None) -> CAReply:
    headers: CIMultiDict[str] = CIMultiDict()
    if content_type is not None:
        headers["Content-Type"] = content_type
    if encoding is not None:
        headers["Content-Transfer-Encoding"] = encoding
    return CAReply(200, CIMultiDictProxy(headers), body)


EST_BODIES = (
    mutated(P7)
    | mutated(base64.b64encode(P7))
    | mutated(PEM)
    | mutated(b"-----BEGIN PKCS7-----\n" + base64.encodebytes(P7) + b"-----END PKCS7-----\n")
    | st.binary(max_size=300)
)
CONTENT_TYPES = st.none() | st.sampled_from(
    [
        "application/pkcs7-mime",
        'application/pkcs7-mime; smime-type="certs-only"',
        "application/pkcs7-mime; smime-type=server-generated-key",
        "text/html",
        "application/pkcs7-mime; ;;=",
    ]
)
ENCODINGS = st.none() | st.sampled_from(["base64", "binary", "BINARY ", "7bit"])


@FUZZ
@given(EST_BODIES, CONTENT_TYPES, ENCODINGS)
@example(b"-----BEGIN PKCS7-----\nAAA\n-----END PKCS7-----", None, None)  # bad padding
# a well-formed PKCS#7 of content type "data": cryptography raises UnsupportedAlgorithm, not
# ValueError (found by this fuzzer in CI)
@example(bytes.fromhex("300b06092a864886f70d010701"), None, "binary")
def test_est_certs_answer(body: bytes, content_type: str | None, encoding: str | None) -> None:
    result = outcome(
        "est certs-only answer",
        lambda: EST._certs("cacerts", _ca_reply(body, content_type, encoding)),
    )
    assert isinstance(result, list | CertdError)


@FUZZ
@given(mutated(bytes.fromhex("300d06092a864886f70d0109070600")) | st.binary(max_size=80), ENCODINGS)
@example(b"\x30", None)  # a tag without its length
@example(b"\x30\x02\x06\x00", None)  # an empty OID
@example(b"\x30\x84\xff\xff\xff\xff", None)  # a length far beyond the data
@example(  # an OID arc with more digits than str(int) writes
    b"\x30\x82\x08\x3a\x06\x82\x08\x36\x2a" + b"\xff" * 2100 + b"\x01", "binary"
)
def test_est_csrattrs(body: bytes, encoding: str | None) -> None:
    result = outcome(
        "est csrattrs answer",
        lambda: parse_csrattrs(decode_body(body, encoding)),
    )
    assert isinstance(result, list | CertdError)


# ---- AD CS ---------------------------------------------------------------------------------

PAGE_PIECES = st.sampled_from(
    [
        '<P ID=locDenied>Denied by Policy Module "0x80094800 (-2146875392)"</P>',
        "<P ID=locInfoNewReq>",
        "<DT ID=locDispLabel>Disposition</DT><DD>5 (Under submission)</DD>",
        "<DT ID=locDispMsgLabel>x</DT><DD>\u201eTaken\u201c 0x80092004</DD>",
        '<a href="certnew.cer?ReqID=',
        "&amp;Enc=b64",
        "nReqId = ",
        '<Input Type=Hidden Name="ReqID" Value="',
        "Your Request Id is ",
        'The disposition message is "',
        "<Title>Microsoft Active Directory Certificate Services</Title>",
        "ID=locPageTitle>",
        "ID=locReqId",
        "ID=locReqFailed",
        "<P",
        "</P>",
        "\u300c",
        "\u201e",
        '"',
        "9" * 5000,  # more digits than int() reads from text
        "12",
        "</DD>",
        "</DT>",
        "<!--",
        "0x8",
    ]
)
PAGES = st.lists(PAGE_PIECES | st.text(max_size=20), max_size=30).map("".join)


@FUZZ
@given(PAGES)
@example('<a href="certnew.cer?ReqID=' + "9" * 5000 + '&amp;Enc=b64">')
@example("nReqId = " + "9" * 5000)
@example("<P ID=locDenied>" * 2000)
def test_adcs_certsrv_page(page: str) -> None:
    result = outcome("adcs certsrv page", lambda: read_certsrv_page(page))
    assert isinstance(result, CertdError) or result.outcome in (  # type: ignore[attr-defined]
        "issued",
        "pending",
        "denied",
        "error",
        "unknown",
    )


# ---- Expressway ----------------------------------------------------------------------------


@FUZZ
@given(JSON.map(json.dumps) | st.text(max_size=200), st.integers(100, 599))
@example(DEEP, 200)
@example(DEEP_OBJ, 409)
def test_expressway_json_answers(text: str, status: int) -> None:
    reply = DeviceReply(status, text)
    outcome("expressway DeviceReply.json/message", lambda: (reply.json(), reply.message))
    outcome("expressway csr_already_pending", lambda: csr_already_pending(reply))
    outcome("expressway acme_enabled_from", lambda: acme_enabled_from(reply.json()))
    outcome("expressway pem_text", lambda: pem_text(text))


@FUZZ
@given(
    st.recursive(
        st.just(PEM.decode()) | JSON_LEAF,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
        ),
        max_leaves=10,
    ).map(json.dumps)
)
@example('{"a": "-----BEGIN x"}')
def test_expressway_pem_in_json(text: str) -> None:
    result = outcome("expressway pem_text (PEM in JSON)", lambda: pem_text(text))
    assert isinstance(result, str)


RAML_LINES = st.lists(
    st.sampled_from(
        ["/v1", "/provisioning", "/edge", "/common", "get:", "post:", "version: x", "#", "  "]
    )
    | st.text(max_size=15),
    max_size=40,
).map(lambda parts: "\n".join(" " * (i % 7) + p for i, p in enumerate(parts)))


@FUZZ
@given(RAML_LINES, st.text(max_size=60))
def test_expressway_raml_and_cli(text: str, cli: str) -> None:
    caps = outcome("expressway parse_raml", lambda: parse_raml(text))
    if not isinstance(caps, CertdError):
        outcome("expressway raml role", lambda: (caps.role(), caps.client_cert_path()))  # type: ignore[attr-defined]
    outcome("expressway version_tuple", lambda: version_tuple(cli))
    outcome("expressway switch_value", lambda: switch_value(cli, "EnableServerEkuUpload"))


# ---- Unified CM ----------------------------------------------------------------------------


@FUZZ
@given(JSON | st.just(PEM.decode()))
@example("x")
@example(1)
@example(True)
@example({"certificates": "x"})
@example([{"certificate": "-----BEGIN CERTIFICATE-----\nAA\n"}])
def test_cucm_trust_list(body: Any) -> None:
    result = outcome("cucm trust list JSON", lambda: trust_pems(body))
    assert isinstance(result, list)


SOAP_PIECES = st.sampled_from(
    [
        "<soapenv:Envelope xmlns:soapenv='http://schemas.xmlsoap.org/soap/envelope/'>",
        "</soapenv:Envelope>",
        "<ns:item>",
        "</ns:item>",
        "<ServiceName>Cisco Tomcat</ServiceName>",
        "<ServiceStatus>Started</ServiceStatus>",
        "<faultstring>",
        "</faultstring>",
        "<!DOCTYPE x [<!ENTITY a 'aaaa'><!ENTITY b '&a;&a;&a;&a;'>]>",
        "&b;",
        "<![CDATA[",
        "]]>",
        "<",
        ">",
    ]
)


@FUZZ
@given(st.lists(SOAP_PIECES | st.text(max_size=10), max_size=30).map("".join))
@example("<a>" * 5000 + "</a>" * 5000)
def test_cucm_soap_answers(text: str) -> None:
    states = outcome("cucm SOAP service states", lambda: read_service_states(text))
    fault = outcome("cucm SOAP fault", lambda: read_fault_string(text))
    assert isinstance(states, dict)
    assert isinstance(fault, str)
