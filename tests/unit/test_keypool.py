"""tests/keypool.py: pre-generated CSR keys for the lab, distinct per run of `per_size` takes."""

from __future__ import annotations

import itertools

import pytest

from tests.keypool import KeyPool


def test_pool_hands_out_per_size_distinct_keys_then_round_robin() -> None:
    pool = KeyPool(per_size=3)
    keys = [pool(1024) for _ in range(7)]
    numbers = [k.private_numbers() for k in keys]
    assert len({n.p for n in numbers[:3]}) == 3
    assert numbers[3:6] == numbers[:3] and numbers[6] == numbers[0]
    assert all(a != b for a, b in itertools.pairwise(numbers))
    assert all(k.key_size == 1024 for k in keys)
    assert pool.taken(1024) == 7 and pool.taken(2048) == 0


def test_pool_keeps_sizes_apart() -> None:
    pool = KeyPool(per_size=2)
    assert pool(1024).key_size == 1024
    assert pool(2048).key_size == 2048
    assert pool(1024).key_size == 1024


def test_pool_of_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least two"):
        KeyPool(per_size=1)
