"""The status page at `/` as a person sees it: a real daemon, rendered by headless Chromium."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import aiohttp

from expressway_certd.monitor.store import RenewalRow, StepRow, Store
from tests.helpers import DaemonProcess, free_port, need_binary

HOSTILE = "</td><script>document.title='pwned'</script>\u202eevil"


class VisibleText(HTMLParser):
    """The text a reader sees: everything outside <style>, <script> and <title>."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.tags: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag in ("style", "script", "title"):
            self.skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script", "title"):
            self.skip -= 1

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.parts).split())


async def chromium(url: str, profile: Path, *extra: str) -> str:
    binary = need_binary("chromium")
    proc = await asyncio.create_subprocess_exec(
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}", *extra, url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "HOME": str(profile)},
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode()


def write_config(tmp_path: Path, ports: dict[str, int], bundle: Path, listen: int) -> Path:
    entries = []
    for name, port in ports.items():
        entries.append(
            f"""
[[expressway]]
name = "{name}"
role = "c"
version = "X15.3"
address = "{name}.example.com"
endpoints = [{{ host = "127.0.0.1", port = {port}, service = "https", sni = "{name}.example.com" }}]
"""
        )
    path = tmp_path / "certd.toml"
    path.write_text(
        f"""
[daemon]
listen = "127.0.0.1:{listen}"
state = "{tmp_path / "state.db"}"
data_dir = "{tmp_path / "data"}"
poll_interval = "2s"
probe_timeout = "1s"
trust_bundle = "{bundle}"
"""
        + "".join(entries)
    )
    return path


async def seed_renewal(url: str, now: datetime) -> None:
    store = await Store.open(url)
    try:
        row = RenewalRow(
            id="r-page-1", target="expe-soon", status="waiting", stage="approve",
            reason="ExpiryWithinRenewBefore", created_at=now - timedelta(hours=2),
            updated_at=now - timedelta(hours=1), next_at=now + timedelta(hours=20), attempts=0,
            message="waiting for approval " + HOSTILE, data={},
        )  # fmt: skip
        await store.create_renewal(row)
        for i, (stage, message) in enumerate(
            [
                ("snapshot", "X15.3 Expressway-C, serving abc"),
                ("preflight", "SANs ok"),
                ("csr", "CSR generated on the box"),
                ("approve", "waiting for approval"),
            ]
        ):
            step = StepRow(row.id, stage, "advance" if stage != "approve" else "wait",
                           now - timedelta(hours=2) + timedelta(minutes=10 * i), 0.5, message)  # fmt: skip
            await store.save_renewal(row, step)
    finally:
        await store.close()


async def test_status_page_in_headless_chromium(tmp_path, served, trust_bundle):
    soon = await served(cn="expe-soon.example.com", sans=["expe-soon.example.com"], days=5)
    later = await served(cn=HOSTILE, sans=["expe-later.example.com"], days=200)
    port = free_port()
    config = write_config(
        tmp_path, {"expe-soon": soon.port, "expe-later": later.port}, trust_bundle, port
    )
    now = datetime.now(UTC)
    await seed_renewal(f"sqlite+aiosqlite:///{tmp_path / 'state.db'}", now)
    # What `trust-map` leaves for the page: a picture with a red (broken) relation.
    (tmp_path / "data").mkdir(mode=0o700, exist_ok=True)
    (tmp_path / "data" / "trust-map.svg").write_text(
        "<svg xmlns='http://www.w3.org/2000/svg' width='300' height='60'>"
        "<text x='10' y='30' fill='red'>expe-c1 -&gt; expe-e1 broken</text></svg>"
    )
    (tmp_path / "data" / "trust-map.json").write_text(
        json.dumps(
            {
                "generated_at": "2026-12-03T08:00:00+00:00",
                "earliest_break": "2026-12-03T08:00:00+00:00",
                "relations": [
                    {"from": "expe-c1", "to": "expe-e1", "relation": "traversal",
                     "store": "trusted-ca", "status": "broken",
                     "reason": "no trusted anchor for 'CN=Corp Root'",
                     "breaks_at": "2026-12-03T08:00:00+00:00"},
                    {"from": "expe-e1", "to": "expe-c1", "relation": "traversal",
                     "store": "trusted-ca", "status": "will break",
                     "reason": "'CN=Short Root' expires 2027-01-10 " + HOSTILE,
                     "breaks_at": "2027-01-10T00:00:00+00:00"},
                    {"from": "expe-c1", "to": "cucm1/n1", "relation": "sip-tls",
                     "store": "callmanager", "status": "ok", "reason": "",
                     "breaks_at": None},
                ],
            }
        )
    )  # fmt: skip
    daemon = await DaemonProcess(config, port).start()
    try:
        await daemon.wait_for(
            "/api/v1/endpoints",
            lambda status, body: status == 200 and len(body) == 2 and all(e["cert"] for e in body),
        )
        status, _ = await daemon.get("/")
        assert status == 200
        status, metrics = await daemon.get("/metrics")
        assert status == 200
        assert (
            'expressway_trust_relation_ok{from="expe-c1",to="expe-e1",relation="traversal"} 0.0'
            in metrics
        )
        dom = await chromium(daemon.base + "/", tmp_path / "profile-dom", "--dump-dom")
        screenshot = tmp_path / "status-page.png"
        await chromium(
            daemon.base + "/", tmp_path / "profile-shot",
            f"--screenshot={screenshot}", "--window-size=1280,1000",
        )  # fmt: skip
    finally:
        await daemon.stop()

    parser = VisibleText()
    parser.feed(dom)
    text = parser.text
    assert "expressway-certd status" in text
    # Targets, sorted by days left: the one expiring first comes first.
    assert text.index("expe-soon") < text.index("expe-later")
    assert "expe-soon Expressway-C X15.3 5 days left" in text
    assert "200 days left" in text
    assert "1 of 1" in text
    # The renewal and its stage timeline, in order.
    assert "expe-soon: waiting at stage approve" in text
    timeline = [
        text.index(s)
        for s in ("snapshot advance", "preflight advance", "csr advance", "approve wait")
    ]
    assert timeline == sorted(timeline)
    # Hostile certificate text is shown as text, never run: no script element, title intact.
    assert "script" not in parser.tags
    assert "<title>expressway-certd status</title>" in dom
    assert "<script>document.title='pwned'</script>\\u202eevil" in text
    assert "\u202e" not in dom
    # The trust map: the earliest break, then what is broken and what will break, in order.
    assert "Trust map" in text
    assert "Earliest break: 2026-12-03 08:00 UTC" in text
    broken = text.index("expe-c1 expe-e1 traversal (trusted-ca) broken 2026-12-03 08:00 UTC")
    will = text.index("expe-e1 expe-c1 traversal (trusted-ca) will break 2027-01-10 00:00 UTC")
    assert broken < will
    assert "'CN=Short Root' expires 2027-01-10 </td><script>" in text
    assert "1 of 3 relations are ok" in text
    assert "cucm1/n1" not in text  # ok relations are only counted
    # The trust map picture, as an image (an <img> SVG runs nothing).
    assert "img" in parser.tags and "data:image/svg+xml;base64," in dom
    # A person sees a picture, saved as a test artefact.
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert screenshot.stat().st_size > 10_000


async def test_status_page_headers_forbid_scripts_and_framing(tmp_path, served, trust_bundle):
    path = "/"
    one = await served(cn="expe-soon.example.com", sans=["expe-soon.example.com"], days=5)
    port = free_port()
    config = write_config(tmp_path, {"expe-soon": one.port}, trust_bundle, port)
    daemon = await DaemonProcess(config, port).start()
    try:
        await daemon.wait_for("/healthz", lambda status, _: status == 200)
        async with aiohttp.ClientSession() as session, session.get(daemon.base + path) as resp:
            assert resp.status == 200
            assert resp.content_type == "text/html"
            csp = resp.headers["Content-Security-Policy"]
            assert "default-src 'none'" in csp and "script-src" not in csp
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
        # Read-only: the page exists only for GET (and HEAD).
        async with aiohttp.ClientSession() as session, session.post(daemon.base + path) as resp:
            assert resp.status == 405
    finally:
        await daemon.stop()
