"""ACME behaviour Pebble 2.4 cannot show: ARI renewal windows, rate limits with Retry-After,
profiles and what they mean for EKUs. A fake ACME client is injected through the constructor."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from acme import messages
from expressway_certd_lab.pki import CA

from expressway_certd.monitor.durations import utcnow
from expressway_certd.monitor.errors import CAError
from expressway_certd.monitor.facts import CLIENT_AUTH, SERVER_AUTH
from expressway_certd.renewers.ca.acme import ACMEConnector
from expressway_certd.renewers.ca.acme_config import ACMEConfig
from expressway_certd.renewers.ca.base import Pending, Presentation
from tests.integration.ca_servers import make_csr


class FakeResponse:
    def __init__(self, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self._body = body
        self.headers = headers or {}

    def json(self) -> dict[str, Any]:
        return self._body


class FakeNet:
    key = None
    account: messages.RegistrationResource | None = None
    last_retry_after: str | None = None

    def __init__(self) -> None:
        self.gets: list[str] = []

    def get(self, url: str, **_: Any) -> FakeResponse:
        self.gets.append(url)
        start = datetime(2030, 1, 10, tzinfo=UTC)
        window = {"start": start.isoformat(), "end": (start + timedelta(days=2)).isoformat()}
        return FakeResponse({"suggestedWindow": window}, {"Retry-After": "21600"})


class FakeACME:
    """Just enough of acme.client.ClientV2 for the paths under test."""

    def __init__(self, directory: dict[str, Any]) -> None:
        self.directory = messages.Directory.from_json(directory)
        self.net = FakeNet()
        self.orders = 0

    def new_order(self, csr_pem: bytes, profile: str | None = None) -> None:
        self.orders += 1
        self.net.last_retry_after = "3600"
        raise messages.Error.with_code("rateLimited", detail="too many new orders recently")


class NoSolver:
    challenge_type = "dns-01"

    async def present(self, item: Presentation) -> None: ...
    async def cleanup(self, item: Presentation) -> None: ...
    async def aclose(self) -> None: ...


DIRECTORY = {
    "newNonce": "https://ca.test/nonce",
    "newAccount": "https://ca.test/acct",
    "newOrder": "https://ca.test/order",
    "renewalInfo": "https://ca.test/ari",
    "meta": {"profiles": {"tlsserver": "serverAuth only", "collab": "server and client"}},
}


def connector(tmp_path: Path, fake: FakeACME, profile: str | None = None) -> ACMEConnector:
    config = ACMEConfig("fake-acme", "https://ca.test/dir", challenge="dns-01", profile=profile)
    return ACMEConnector(
        config,
        data_dir=tmp_path,
        solver=NoSolver(),
        acme_client=fake,  # type: ignore[arg-type]
    )


async def test_ari_window_from_renewal_info(tmp_path: Path) -> None:
    fake = FakeACME(DIRECTORY)
    conn = connector(tmp_path, fake)
    root = CA.create("ARI Root")
    leaf, _ = root.issue("expe.example.com", key_kind="ec", key_size=256)
    window = await conn.renewal_window(leaf)
    assert window is not None
    assert window.start == datetime(2030, 1, 10, tzinfo=UTC)
    assert window.end - window.start == timedelta(days=2)
    assert timedelta(hours=5) < window.retry_after - utcnow() <= timedelta(hours=6)
    assert fake.net.gets[0].startswith("https://ca.test/ari/")


async def test_no_renewal_info_no_window(tmp_path: Path) -> None:
    fake = FakeACME({k: v for k, v in DIRECTORY.items() if k != "renewalInfo"})
    root = CA.create("ARI Root")
    leaf, _ = root.issue("expe.example.com", key_kind="ec", key_size=256)
    assert await connector(tmp_path, fake).renewal_window(leaf) is None


async def test_rate_limited_new_order_is_pending_for_retry_after(tmp_path: Path) -> None:
    fake = FakeACME(DIRECTORY)
    conn = connector(tmp_path, fake)
    result = await conn.submit(make_csr("expe.example.com"))
    assert isinstance(result, Pending)
    assert result.handle["order_url"] is None  # no order yet: poll creates it
    json.dumps(result.handle)
    assert timedelta(minutes=59) < result.retry_at - utcnow() <= timedelta(hours=1)
    assert "rate limited" in result.reason
    again = await conn.poll(result.handle)
    assert isinstance(again, Pending)
    assert fake.orders == 2


async def test_profiles_and_their_ekus(tmp_path: Path) -> None:
    fake = FakeACME(DIRECTORY)
    server_only = connector(tmp_path, fake, "tlsserver").capabilities()
    assert server_only.delivers(SERVER_AUTH) is True
    assert server_only.delivers(CLIENT_AUTH) is False
    assert connector(tmp_path, fake, "collab").capabilities().delivers(CLIENT_AUTH) is None
    results = await connector(tmp_path, fake, "nosuch").check()
    assert [r.ok for r in results][-1] is False
    assert "choose one of collab, tlsserver" in results[-1].detail


class RefusingNet(FakeNet):
    """An account the CA still holds as valid, whose new orders it refuses (names not allowed)."""

    account = messages.RegistrationResource(
        uri="https://ca.test/acct/1", body=messages.Registration()
    )

    def __init__(self) -> None:
        super().__init__()
        self.posts: list[str] = []

    def post(self, url: str, obj: object, **_: Any) -> FakeResponse:
        self.posts.append(url)
        return FakeResponse({"status": "valid", "contact": []})


class RefusingACME(FakeACME):
    def __init__(self, directory: dict[str, Any]) -> None:
        super().__init__(directory)
        self.net = RefusingNet()

    def new_order(self, csr_pem: bytes, profile: str | None = None) -> None:
        self.orders += 1
        raise messages.Error.with_code("unauthorized", detail="not allowed to issue for this name")


async def test_unauthorized_with_a_valid_account_is_reported_not_re_registered(
    tmp_path: Path,
) -> None:
    fake = RefusingACME(DIRECTORY)
    published: list[object] = []

    async def publish(event: object) -> None:
        published.append(event)

    config = ACMEConfig("fake-acme", "https://ca.test/dir", challenge="dns-01")
    conn = ACMEConnector(
        config,
        data_dir=tmp_path,
        solver=NoSolver(),
        acme_client=fake,
        events=publish,  # type: ignore[arg-type]
    )
    with pytest.raises(
        CAError, match="new_order: the ACME server answered unauthorized: not allowed"
    ):
        await conn.submit(make_csr("expe.example.com"))
    assert fake.net.posts == ["https://ca.test/acct/1"]  # the account was asked, and is valid
    assert fake.orders == 1
    assert published == []
    assert not (tmp_path / "acme").exists()  # nothing registered, no key written
