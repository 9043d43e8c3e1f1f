"""Test-only RSA keys for the lab Expressway's CSRs (its `csr_keys` option).

A real box makes a fresh RSA key per CSR; generating an RSA-4096 key costs seconds of CPU on
the CI machine, and a renewal test makes one per renewal (the fault-injection test makes about
a hundred). Almost all of that time goes into finding the two primes. `KEY_POOL` generates a
few keys per size once, keeps their primes, and hands out keys built from distinct pairs of
those primes: cheap, and never the same key twice in a process (a repeated key would make a
byte-identical CSR for the same box, which a CA such as lab/est.py rightly takes for a resend
of the earlier request). When the pairs run out it generates one more key, whose two primes
pair with every prime it has. The keys share prime factors with each other, which only a test
may tolerate.

Never used outside tests: the demo and `expressway-certd lab` build their labs without it.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections import defaultdict

from cryptography.hazmat.primitives.asymmetric import rsa

E = 65537


def key_from_primes(p: int, q: int) -> rsa.RSAPrivateKey:
    """The RSA key (e = 65537) with modulus p * q."""
    d = pow(E, -1, math.lcm(p - 1, q - 1))
    numbers = rsa.RSAPrivateNumbers(
        p=p,
        q=q,
        d=d,
        dmp1=rsa.rsa_crt_dmp1(d, p),
        dmq1=rsa.rsa_crt_dmq1(d, q),
        iqmp=rsa.rsa_crt_iqmp(p, q),
        public_numbers=rsa.RSAPublicNumbers(E, p * q),
    )
    return numbers.private_key()


class KeyPool:
    """`pool(key_length)` -> an RSA key of that length no earlier call returned."""

    def __init__(self, seed_keys: int = 2) -> None:
        if seed_keys < 1:
            raise ValueError("a key pool needs at least one seed key per size")
        self.seed_keys = seed_keys
        self._primes: dict[int, list[int]] = defaultdict(list)
        self._used: dict[int, set[frozenset[int]]] = defaultdict(set)
        self._taken: dict[int, int] = defaultdict(int)
        self._lock = threading.Lock()

    def _grow(self, key_length: int) -> None:
        key = rsa.generate_private_key(public_exponent=E, key_size=key_length)
        numbers = key.private_numbers()
        self._primes[key_length] += [numbers.p, numbers.q]

    def __call__(self, key_length: int) -> rsa.RSAPrivateKey:
        with self._lock:
            while len(self._primes[key_length]) < 2 * self.seed_keys:
                self._grow(key_length)
            while True:
                for p, q in itertools.combinations(self._primes[key_length], 2):
                    pair = frozenset((p, q))
                    if pair in self._used[key_length] or (p * q).bit_length() != key_length:
                        continue
                    self._used[key_length].add(pair)
                    self._taken[key_length] += 1
                    return key_from_primes(p, q)
                self._grow(key_length)

    def taken(self, key_length: int) -> int:
        """How many keys of that length were handed out."""
        return self._taken[key_length]


KEY_POOL = KeyPool()
