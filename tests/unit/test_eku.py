from __future__ import annotations

import pytest
from expressway_certd_lab.pki import CLIENT_AUTH, SERVER_AUTH

from expressway_certd.monitor.eku import (
    client_auth_required,
    decide_eku,
    eku_problem,
    parse_version,
)
from expressway_certd.monitor.facts import facts_from_x509


@pytest.mark.parametrize(
    ("version", "parsed"),
    [
        ("X15.4", (15, 4, 0)),
        ("x14.3.2", (14, 3, 2)),
        ("X8.11", (8, 11, 0)),
        ("", None),
        ("abc", None),
    ],
)
def test_parse_version(version, parsed):
    assert parse_version(version) == parsed


@pytest.mark.parametrize(
    ("version", "role", "required"),
    [
        (None, None, True),  # unknown: the safe answer
        ("X14.3", "c", True),
        ("X14.3", "e", True),
        ("X15.0", "e", True),
        ("X15.3.1", "e", True),
        ("X15.4", "c", True),  # C still uses its cert as a client towards E and CUCM
        ("X15.4", "e", False),  # MRA on E accepts serverAuth-only
        ("X15.4", None, True),
        ("X15.5", "c", False),  # separate client certificate
        ("X15.5", "e", False),
        ("X16.0", "c", False),
    ],
)
def test_client_auth_required(version, role, required):
    assert client_auth_required(version, role) is required


@pytest.mark.parametrize(
    ("eku", "version", "role", "problem"),
    [
        ([SERVER_AUTH, CLIENT_AUTH], "X14.3", "c", None),
        ([SERVER_AUTH], "X14.3", "c", "missing TLS Web Client Authentication"),
        ([SERVER_AUTH], "X15.4", "e", None),
        ([CLIENT_AUTH], "X15.5", "e", "missing TLS Web Server Authentication"),
        ([], "X14.3", "c", None),  # no EKU extension: unrestricted
    ],
)
def test_eku_problem(make_cert, eku, version, role, problem):
    facts = facts_from_x509(make_cert(eku=eku))
    result = eku_problem(facts, version, role)
    if problem is None:
        assert result is None
    else:
        assert result is not None and problem in result and "FN74362" in result


@pytest.mark.parametrize(
    ("eku", "problem"),
    [
        ([SERVER_AUTH, CLIENT_AUTH], None),
        ([CLIENT_AUTH], None),  # a client certificate needs no serverAuth
        ([SERVER_AUTH], "missing TLS Web Client Authentication"),
    ],
)
def test_eku_problem_of_the_x15_5_client_certificate(make_cert, eku, problem):
    facts = facts_from_x509(make_cert(eku=eku))
    result = eku_problem(facts, "X15.5", "c", cert_kind="client")
    if problem is None:
        assert result is None
    else:
        assert result is not None and problem in result and "client certificate" in result


def test_decide_eku_names_the_rule_and_the_switch():
    decision = decide_eku("X15.4", "e", server_eku_upload=None, peer_version="X15.4")
    assert decision.rule == "x15.4-e-switch-off"
    assert "EnableServerEkuUpload" in decision.reason and "not read" in decision.reason
    allowed = decide_eku("X15.4.1", "e", server_eku_upload=True, peer_version="X15.4.3")
    assert (allowed.required, allowed.rule) == (
        (SERVER_AUTH.dotted_string,),
        "x15.4-e-server-only-allowed",
    )
