"""Capability discovery: parsing /api/raml into (method, path) operations and a role."""

from __future__ import annotations

from expressway_certd.renewers.expressway import OPERATIONS, parse_raml, pem_text, version_tuple

NESTED = """#%RAML 0.8
title: Expressway
version: X15.4
baseUri: https://{host}/api
/provisioning:
  /certs:
    /server:
      get:
        description: current
      post:
        body:
          multipart/form-data:
    /generate_csr:
      get:
  /controller/zone/unifiedcommunicationstraversal:
    get:
/v1/provisioning/common/cluster/peers:
  get:
"""


def test_nested_and_flat_resources() -> None:
    caps = parse_raml(NESTED)
    assert caps.operations == {
        ("GET", "/provisioning/certs/server"),
        ("POST", "/provisioning/certs/server"),
        ("GET", "/provisioning/certs/generate_csr"),
        ("GET", "/provisioning/controller/zone/unifiedcommunicationstraversal"),
        ("GET", "/provisioning/common/cluster/peers"),
    }
    assert caps.raml_version == "X15.4"
    assert caps.supports("read server certificate")
    assert caps.supports("read cluster peers")
    assert not caps.supports("generate CSR")
    assert not caps.supports("restart")


def test_role_from_role_specific_resources() -> None:
    assert parse_raml(NESTED).role() == "c"
    edge = "/provisioning/edge/zone/traversalserver:\n  get:\n"
    assert parse_raml(edge).role() == "e"
    assert parse_raml("/provisioning/sysinfo:\n  get:\n").role() is None


def test_keys_that_look_like_methods_outside_resources_are_ignored() -> None:
    caps = parse_raml("get: nothing\nschemas:\n  - post: x\n")
    assert caps.operations == frozenset()


def test_every_operation_has_method_and_api_path() -> None:
    for method, path in OPERATIONS.values():
        assert method in ("GET", "POST")
        assert path.startswith("/provisioning/") or path.startswith("/status/")


def test_version_tuple() -> None:
    assert version_tuple("X15.4.1") == (15, 4)
    assert version_tuple("x14.3") == (14, 3)
    assert version_tuple("15.0") is None


def test_pem_is_found_inside_json_answers() -> None:
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"
    assert pem_text(pem) == pem
    assert pem_text('{"Certificate": "' + pem.replace("\n", "\\n") + '"}') == pem + "\n"
    assert pem_text('[{"PEM": "' + pem.replace("\n", "\\n") + '"}, {"x": 1}]') == pem + "\n"
    assert pem_text('{"Message": "none"}') == '{"Message": "none"}'
