"""The one mapping of HTTP error answers to CA error reasons, shared by EST and AD CS."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from expressway_certd.renewers.ca.base import CARequestError, ConnectorBase
from expressway_certd.renewers.ca.httpclient import (
    Reply,
    StatusWords,
    raise_for_status,
    status_class,
)

WORDS = StatusWords(
    server="the EST server",
    auth="our credentials",
    auth_fix="AUTH-FIX",
    forbidden_fix="FORBIDDEN-FIX",
    not_found_fix="NOT-FOUND-FIX",
    server_error_fix="SERVER-FIX",
    refused_fix="REFUSED-FIX",
    bad_request_fix="BAD-REQUEST-FIX",
)
URL = "https://ca.example/.well-known/est/simpleenroll"


def reply(status: int, body: bytes = b"", **headers: str | list[str]) -> Reply:
    multi: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        for one in [value] if isinstance(value, str) else value:
            multi.add(name.replace("_", "-"), one)
    return Reply(status, CIMultiDictProxy(multi), body)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, None),
        (202, None),
        (204, None),
        (302, None),
        (400, ("refused", False)),
        (401, ("auth", False)),
        (403, ("forbidden", False)),
        (404, ("not_found", False)),
        (409, ("refused", False)),
        (499, ("refused", False)),
        (500, ("server_error", True)),
        (503, ("server_error", True)),
    ],
)
def test_status_class_table(status: int, expected: tuple[str, bool] | None) -> None:
    assert status_class(status) == expected


def raised(answer: Reply, step: str = "simpleenroll") -> CARequestError:
    with pytest.raises(CARequestError) as info:
        raise_for_status(ConnectorBase("unit-ca", "est"), step, URL, answer, WORDS)
    return info.value


def test_success_is_returned_unchanged() -> None:
    ok = reply(200, b"body")
    assert raise_for_status(ConnectorBase("unit-ca", "est"), "cacerts", URL, ok, WORDS) is ok


def test_401_names_the_schemes_asked_for_never_their_tokens() -> None:
    err = raised(reply(401, WWW_Authenticate=['Basic realm="est"', "Negotiate abcSECRET"]))
    assert str(err) == (
        "CA 'unit-ca': simpleenroll: the EST server refused our credentials "
        "(HTTP 401; it asks for Basic, Negotiate); AUTH-FIX"
    )
    assert "SECRET" not in str(err) and err.reason == "auth" and not err.retryable


def test_403_404_and_5xx_name_url_server_and_fix() -> None:
    assert str(raised(reply(403))).endswith(
        "the EST server denied access (HTTP 403); FORBIDDEN-FIX"
    )
    assert str(raised(reply(404))).endswith(f"{URL} does not exist (HTTP 404); NOT-FOUND-FIX")
    err = raised(reply(503, b"  down \n for maintenance "))
    assert str(err).endswith("the EST server failed (HTTP 503: down for maintenance); SERVER-FIX")
    assert err.reason == "server_error" and err.retryable


def test_an_html_error_page_is_not_quoted() -> None:
    err = raised(reply(500, b"<html><body>IIS</body></html>", Content_Type="text/html"))
    assert str(err).endswith("the EST server failed (HTTP 500); SERVER-FIX")


def test_a_400_gets_the_bad_request_fix_other_4xx_the_refused_fix() -> None:
    assert str(raised(reply(400, b"Invalid or corrupted pkcs10 request."))).endswith(
        "refused the request (HTTP 400: Invalid or corrupted pkcs10 request.); BAD-REQUEST-FIX"
    )
    assert str(raised(reply(409, b"busy"))).endswith("(HTTP 409: busy); REFUSED-FIX")
