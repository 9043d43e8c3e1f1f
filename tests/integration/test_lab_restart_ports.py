"""A lab box comes back from a restart on its own ports, even on a busy machine.

While the box is down its listeners keep their ports bound but not listening
(lab.tls.LabListener.stop(hold=True)): a client is refused, as by a closed port, and no other
socket (an outgoing connection given that port by the kernel, under `make test`'s parallel
workers) can take the port before the box listens on it again.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from expressway_certd_lab.pki import CA, write_key_and_chain
from expressway_certd_lab.tls import LabListener, server_context


def taken(port: int) -> bool:
    """Whether another socket fails to bind 127.0.0.1:port (as an outgoing one would)."""
    with socket.socket() as other:
        try:
            other.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


async def refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


async def test_a_restarting_listener_keeps_its_port_and_refuses_meanwhile(tmp_path: Path) -> None:
    ca = CA.create("Restart Test CA")
    leaf, key = ca.issue("box.example", ["box.example"], key_kind="ec", key_size=256)
    assert key is not None
    cert_file, key_file = write_key_and_chain(tmp_path, "box", leaf, key, [])
    listener = await LabListener(context=server_context(cert_file, key_file)).start()
    port = listener.port
    try:
        await listener.stop(hold=True)
        assert taken(port), "the port was free while the box was down"
        assert await refused(port)
        await listener.start()
        assert listener.port == port
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
    finally:
        await listener.stop()
    assert not taken(port), "a final stop keeps nothing bound"


async def test_a_plain_stop_frees_the_port(tmp_path: Path) -> None:
    listener = await LabListener(mode="plain").start()
    await listener.stop()
    assert not taken(listener.port)


@pytest.mark.parametrize("hold", [True, False])
async def test_stop_twice_is_harmless(hold: bool) -> None:
    listener = await LabListener(mode="plain").start()
    await listener.stop(hold=hold)
    await listener.stop()
    assert not taken(listener.port)
