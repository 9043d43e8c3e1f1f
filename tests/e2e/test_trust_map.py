"""`trust-map` against the lab over the boxes' real REST APIs: a relation broken on purpose,
seen in the table, the JSON and the picture, and cleared when fixed."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from expressway_certd_lab.pki import CA
from expressway_certd_lab.topology import Lab

from expressway_certd.alerts.trust import exposition
from expressway_certd.monitor.store import RenewalRow, Store


async def cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "expressway_certd.cli", *args,
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
            (node, "expe-c1", "trusted-ca"): "ok",
        }
        relations = {(r["from"], r["to"], r["relation"]) for r in json.loads(out)["relations"]}
        # Unified CM's CallManager (SIP TLS) and tomcat (HTTPS) certificates, verified by the C
        assert {(node, "expe-c1", "sip-tls"), (node, "expe-c1", "https")} <= relations
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


async def test_expiring_root_and_pending_new_ca_on_the_lab(tmp_path: Path) -> None:
    """A trusted root that expires before the leaf it anchors, and a pending renewal of the E
    whose new CA the C does not trust and the E's renewal would not upload there (the E has
    no traversal_peer configured): both 'will break', both clear when fixed."""
    async with Lab(tmp_path / "lab", restart_seconds=0.2) as lab:
        path = lab.write_config(tmp_path / "certd.toml")
        text = path.read_text()
        e_block = text.index('name = "expe-e1"')
        peer_line = 'traversal_peer = "expe-c1"\n'
        cut = text.index(peer_line, e_block)
        path.write_text(text[:cut] + text[cut + len(peer_line) :])
        config = str(path)
        c, e = lab.expressway_c, lab.expressway_e

        # 1. The E serves a certificate from a root that expires in 20 days.
        short = CA.create("Short Issuing", parent=CA.create("Short Root", days=20), days=20)
        leaf, key = short.issue(e.fqdn, [e.fqdn], days=365)
        e.install_now(leaf, key)
        for box in (c, e):
            box.trusted_cas.extend(short.chain())
        code, out, err = await cli("trust-map", "--config", config, "--json", "--no-svg")
        assert code == 1, err
        doc = json.loads(out)
        e_to_c = next(r for r in doc["relations"] if (r["from"], r["to"]) == ("expe-e1", "expe-c1"))
        assert e_to_c["status"] == "will break"
        assert "Short" in e_to_c["reason"]
        assert doc["earliest_break"] == e_to_c["breaks_at"]
        metrics = exposition(Path(lab.workdir) / "data")
        assert (
            'expressway_trust_relation_break_timestamp_seconds{from="expe-e1",to="expe-c1"'
            in metrics
        )

        # Fixed: the E serves a certificate of the long-lived lab CA again.
        leaf, key = lab.ca.issue(e.fqdn, [e.fqdn], days=365)
        e.install_now(leaf, key)
        code, out, err = await cli("trust-map", "--config", config, "--json", "--no-svg")
        assert code == 0, out + err

        # 2. A renewal of the E holds a certificate from a new CA; only the E would learn it.
        new_ca = CA.create("Next Issuing", parent=CA.create("Next Root"))
        new_leaf, _ = new_ca.issue(e.fqdn, [e.fqdn], days=365)
        store = await Store.open(f"sqlite+aiosqlite:///{lab.workdir / 'state.db'}")
        now = datetime.now(UTC)
        row = RenewalRow(
            id="r-next-ca", target="expe-e1", status="waiting", stage="approve",
            reason="test", created_at=now, updated_at=now, next_at=None, attempts=0,
            message="", data={"issued": {
                "leaf_pem": new_leaf.public_bytes(serialization.Encoding.PEM).decode(),
                "chain_pem": "".join(
                    x.public_bytes(serialization.Encoding.PEM).decode() for x in new_ca.chain()
                ),
            }},
        )  # fmt: skip
        await store.create_renewal(row)
        await store.close()
        code, out, err = await cli("trust-map", "--config", config, "--json", "--no-svg")
        assert code == 1, err
        e_to_c = next(
            r
            for r in json.loads(out)["relations"]
            if (r["from"], r["to"]) == ("expe-e1", "expe-c1")
        )
        assert e_to_c["status"] == "will break"
        assert "pending renewal" in e_to_c["reason"]

        # Fixed: the C trusts the new root.
        c.trusted_cas.append(new_ca.chain()[-1])
        code, out, err = await cli("trust-map", "--config", config, "--json", "--no-svg")
        assert code == 0, out + err


async def test_x15_5_the_verb_reads_the_client_certificate(tmp_path: Path) -> None:
    """`trust-map` reads each box itself: on X15.5 boxes it reads the C's client certificate
    too, and judges traversal C -> E and C -> Unified CM with it, named "(client cert)"; a C
    whose client copy is under a CA nobody trusts is broken there though its served
    certificate is fine; trusted everywhere, all ok."""
    async with Lab(tmp_path / "lab", restart_seconds=0.2) as lab:
        c, e = lab.expressway_c, lab.expressway_e
        for box in (c, e):
            box.upgrade("X15.5")
        other = CA.create("Other Issuing", parent=CA.create("Other Root"))
        copy, key = other.issue(c.fqdn, [c.fqdn])
        c.install_client_now(copy, key)
        config = str(lab.write_config(tmp_path / "certd.toml"))
        node = f"cucm1/{lab.cucm.host}"

        code, out, err = await cli("trust-map", "--config", config, "--json", "--no-svg")
        assert code == 1, err
        doc = {(r["from"], r["to"], r["store"]): r for r in json.loads(out)["relations"]}
        for key_ in [("expe-c1", "expe-e1", "trusted-ca"), ("expe-c1", node, "callmanager")]:
            assert (doc[key_]["status"], doc[key_]["presenter_cert"]) == ("broken", "client")
            assert "client certificate" in doc[key_]["reason"]
        assert doc[("expe-e1", "expe-c1", "trusted-ca")]["presenter_cert"] == "server"
        code, text, _ = await cli("trust-map", "--config", config, "--no-svg")
        assert "expe-c1 (client cert) expe-e1" in " ".join(text.split())

        # Fixed: the E, the C and Unified CM trust the CA of the client certificate.
        e.trusted_cas.extend(other.chain())
        c.trusted_cas.extend(other.chain())
        for store in ("callmanager", "tomcat"):
            lab.cucm.trust[store].append(other.chain()[-1])
        code, out, err = await cli("trust-map", "--config", config, "--json", "--no-svg")
        assert code == 0, out + err
