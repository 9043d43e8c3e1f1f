"""`trust-map` against the lab over the boxes' real REST APIs: a relation broken on purpose,
seen in the table, the JSON and the picture, and cleared when fixed."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from alerts.trust import exposition
from lab.topology import Lab


async def cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def statuses(out: str) -> dict[tuple[str, str, str], str]:
    doc = json.loads(out)
    return {(r["from"], r["to"], r["store"]): r["status"] for r in doc["relations"]}


async def test_trust_map_breaks_and_heals(tmp_path: Path) -> None:
    async with Lab(tmp_path / "lab", restart_seconds=0.2) as lab:
        config = str(lab.write_config(tmp_path / "certd.toml"))
        svg = tmp_path / "map.svg"
        node = f"cucm1/{lab.cucm.host}"

        code, out, err = await cli("trust-map", "--config", config, "--json", "--svg", str(svg))
        assert code == 0, out + err
        assert statuses(out) == {
            ("expe-c1", "expe-e1", "trusted-ca"): "ok",
            ("expe-e1", "expe-c1", "trusted-ca"): "ok",
            ("expe-c1", node, "tomcat"): "ok",
            ("expe-c1", node, "callmanager"): "ok",
        }
        assert json.loads(out)["earliest_break"] is None
        assert b"<svg" in svg.read_bytes() and b"red" not in svg.read_bytes()

        # Someone removes the CA from the Expressway-E's trusted list.
        saved = list(lab.expressway_e.trusted_cas)
        lab.expressway_e.trusted_cas.clear()
        code, out, err = await cli("trust-map", "--config", config, "--json", "--svg", str(svg))
        assert code == 1, err
        got = statuses(out)
        assert got[("expe-c1", "expe-e1", "trusted-ca")] == "broken"
        assert got[("expe-e1", "expe-c1", "trusted-ca")] == "ok"
        assert b'stroke="red"' in svg.read_bytes()
        # What the daemon exports at scrape time from the same run.
        metrics = exposition(Path(config).parent / "lab" / "data")
        assert (
            'expressway_trust_relation_ok{from="expe-c1",to="expe-e1",relation="traversal"} 0.0'
            in metrics
        )
        code, text, _ = await cli("trust-map", "--config", config, "--no-svg")
        assert code == 1
        assert "broken: no trusted anchor" in text
        assert "Earliest break:" in text

        lab.expressway_e.trusted_cas.extend(saved)
        code, out, err = await cli("trust-map", "--config", config, "--json", "--no-svg")
        assert code == 0, out + err
        assert set(statuses(out).values()) == {"ok"}
