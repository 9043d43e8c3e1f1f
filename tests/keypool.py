"""Test-only RSA keys for the lab Expressway's CSRs (its `csr_keys` option).

A real box makes a fresh RSA key per CSR; generating an RSA-4096 key costs seconds of CPU on
the CI machine, and a renewal test makes one per renewal (the fault-injection test makes over
a hundred). `KEY_POOL` hands out pre-generated keys in turn instead: the first `per_size` keys
of each size are generated on first use and then reused round-robin, so two CSRs made one after
the other never share a key, and the box itself skips any key it still holds. Tests that need a
key no other CSR ever had (none so far) leave `csr_keys` unset.

Never used outside tests: the demo and `expressway-certd lab` build their labs without it.
"""

from __future__ import annotations

import threading
from collections import defaultdict

from cryptography.hazmat.primitives.asymmetric import rsa


class KeyPool:
    """`pool(key_length)` -> an RSA key; `per_size` distinct keys per length, then round-robin."""

    def __init__(self, per_size: int = 4) -> None:
        if per_size < 2:
            raise ValueError("a key pool needs at least two keys per size")
        self.per_size = per_size
        self._keys: dict[int, list[rsa.RSAPrivateKey]] = defaultdict(list)
        self._taken: dict[int, int] = defaultdict(int)
        self._lock = threading.Lock()

    def __call__(self, key_length: int) -> rsa.RSAPrivateKey:
        with self._lock:
            n = self._taken[key_length]
            self._taken[key_length] = n + 1
            keys = self._keys[key_length]
            if len(keys) < self.per_size:
                keys.append(rsa.generate_private_key(public_exponent=65537, key_size=key_length))
                return keys[-1]
            return keys[n % self.per_size]

    def taken(self, key_length: int) -> int:
        """How many keys of that length were handed out."""
        return self._taken[key_length]


KEY_POOL = KeyPool()
