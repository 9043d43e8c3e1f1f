"""The lab Expressway's test-only `csr_keys` option: CSR keys come from the given source, and a
key the box still holds is never reused for a new CSR (a real box makes a fresh key)."""

from __future__ import annotations

from pathlib import Path

from expressway_certd_lab.expressway import ExpresswaySim
from expressway_certd_lab.pki import PrivateKey, new_key

from expressway_certd.renewers.expressway import CsrRequest, ExpresswayClient
from tests.integration.test_expressway_client import client_config


async def test_csr_keys_skip_a_key_the_box_holds(tmp_path: Path) -> None:
    fresh = new_key("rsa", 2048)
    asked: list[int] = []
    handed: list[PrivateKey] = []

    def source(key_length: int) -> PrivateKey:
        asked.append(key_length)
        # first the key the box serves (and has installed), then a new one
        key = box.active.key if not handed else fresh
        handed.append(key)
        return key

    box = await ExpresswaySim("expe-c1", workdir=tmp_path / "c1", csr_keys=source).start()
    try:
        async with ExpresswayClient(client_config(box, timeout=30.0)) as client:
            csr = await client.generate_csr(CsrRequest(key_length=2048))
        assert asked == [2048, 2048]
        assert csr.public_key() == fresh.public_key()
        assert csr.public_key() != box.active.key.public_key()
    finally:
        await box.stop()


async def test_without_csr_keys_every_csr_has_a_new_key(tmp_path: Path) -> None:
    box = await ExpresswaySim("expe-c1", workdir=tmp_path / "c1").start()
    try:
        keys = []
        async with ExpresswayClient(client_config(box, timeout=30.0)) as client:
            for _ in range(2):
                csr = await client.generate_csr(CsrRequest(key_length=2048))
                keys.append(csr.public_key())
                assert box.pending is not None
                box.pending = None  # the next CSR is a new one, not the pending one
        assert keys[0] != keys[1]
        assert box.active.key.public_key() not in keys
    finally:
        await box.stop()
