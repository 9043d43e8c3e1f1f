"""lab.pki.share_rsa_keys: benchmarks with thousands of simulated boxes draw RSA keys from a
pool; off (the default) every key is fresh."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from expressway_certd_lab.pki import new_key, share_rsa_keys


def _der(key: object) -> bytes:
    return key.public_key().public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture
def pool() -> Iterator[None]:
    share_rsa_keys(2)
    try:
        yield
    finally:
        share_rsa_keys(0)


def test_keys_are_fresh_by_default() -> None:
    assert _der(new_key("rsa", 1024)) != _der(new_key("rsa", 1024))


def test_a_pool_hands_out_its_keys_in_turn(pool: None) -> None:
    keys = [_der(new_key("rsa", 1024)) for _ in range(6)]
    assert len(set(keys)) == 2
    assert keys[0::2] == [keys[0]] * 3 and keys[1::2] == [keys[1]] * 3


def test_a_pool_does_not_touch_ec_keys(pool: None) -> None:
    assert _der(new_key("ec", 256)) != _der(new_key("ec", 256))


def test_the_first_keys_of_a_pool_are_distinct_whatever_came_before(pool: None) -> None:
    new_key("rsa", 1024)  # an odd number of draws before the pool is set up again
    share_rsa_keys(2)
    first, second = _der(new_key("rsa", 1024)), _der(new_key("rsa", 1024))
    assert first != second
