"""tests/keypool.py: test-only CSR keys for the lab, never the same key twice in a process."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from tests.keypool import KeyPool


def test_pool_never_hands_out_the_same_key_twice() -> None:
    pool = KeyPool(seed_keys=2)  # 4 primes: 6 pairs, then it grows
    keys = [pool(1024) for _ in range(12)]
    moduli = [k.public_key().public_numbers().n for k in keys]
    assert len(set(moduli)) == 12
    assert all(k.key_size == 1024 for k in keys)
    assert pool.taken(1024) == 12 and pool.taken(2048) == 0


def test_pool_keys_are_working_rsa_keys() -> None:
    key = KeyPool(seed_keys=1)(1024)
    message = b"csr to be signed"
    signature = key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    key.public_key().verify(signature, message, padding.PKCS1v15(), hashes.SHA256())


def test_pool_keeps_sizes_apart() -> None:
    pool = KeyPool(seed_keys=1)
    assert pool(1024).key_size == 1024
    assert pool(2048).key_size == 2048
    assert pool(1024).key_size == 1024


def test_pool_without_seed_keys_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        KeyPool(seed_keys=0)
