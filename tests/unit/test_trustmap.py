"""The trust map's pure core as a table: each relation kind broken on purpose, then fixed."""

from __future__ import annotations

import html
import shutil
import subprocess
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from lab.pki import CA
from renewers.trustmap import (
    BROKEN,
    EXPRESSWAY_STORE,
    OK,
    UNKNOWN,
    WILL_BREAK,
    Party,
    earliest_break,
    relations,
    to_dot,
    trust_map,
)

NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def pki():
    root = CA.create("Corp Root", days=3650)
    issuing = CA.create("Corp Issuing", parent=root, days=1800)
    short_root = CA.create("Short Root", days=30)
    short_issuing = CA.create("Short Issuing", parent=short_root, days=30)
    new_root = CA.create("New Root")
    new_issuing = CA.create("New Issuing", parent=new_root)
    c_leaf, _ = issuing.issue("expe-c1", ["expe-c1"], key_kind="ec", key_size=256)
    e_leaf, _ = issuing.issue("expe-e1", ["expe-e1"], key_kind="ec", key_size=256)
    new_c, _ = new_issuing.issue("expe-c1", ["expe-c1"], key_kind="ec", key_size=256)
    short_e, _ = short_issuing.issue("expe-e1", ["expe-e1"], days=365, key_kind="ec", key_size=256)
    return {
        "root": root,
        "issuing": issuing,
        "short": short_issuing,
        "new": new_issuing,
        "c_leaf": c_leaf,
        "e_leaf": e_leaf,
        "new_c": new_c,
        "short_e": short_e,
    }


def deployment(pki):
    corp = tuple(pki["issuing"].chain())
    parties = {
        "expe-c1": Party("expe-c1", "expressway-c", pki["c_leaf"], {EXPRESSWAY_STORE: corp}),
        "expe-e1": Party("expe-e1", "expressway-e", pki["e_leaf"], {EXPRESSWAY_STORE: corp}),
        "cucm1/n1": Party(
            "cucm1/n1", "unified-cm", None, {"callmanager": (pki["root"].cert,), "tomcat": corp}
        ),
    }
    return parties, relations(parties, [("expe-c1", "expe-e1")], [("expe-c1", "cucm1/n1")])


def statuses(parties, rels):
    return {
        (j.relation.presenter, j.relation.verifier, j.relation.store): j.status
        for j in trust_map(parties, rels, NOW)
    }


def test_healthy_deployment_is_all_ok(pki):
    parties, rels = deployment(pki)
    assert [(r.presenter, r.verifier, r.store, r.relation) for r in rels] == [
        ("expe-c1", "expe-e1", EXPRESSWAY_STORE, "traversal"),
        ("expe-e1", "expe-c1", EXPRESSWAY_STORE, "traversal"),
        ("expe-c1", "cucm1/n1", "callmanager", "sip-tls"),
        ("expe-c1", "cucm1/n1", "tomcat", "https"),
    ]
    assert set(statuses(parties, rels).values()) == {OK}
    assert earliest_break(trust_map(parties, rels, NOW)) is None


def test_ca_removed_from_the_e_breaks_the_c_to_e_relation_only(pki):
    parties, rels = deployment(pki)
    parties["expe-e1"] = replace(
        parties["expe-e1"],
        stores={EXPRESSWAY_STORE: ()},
        # the E still sends its own chain: it is built from its list, now empty
    )
    got = statuses(parties, rels)
    assert got[("expe-c1", "expe-e1", EXPRESSWAY_STORE)] == BROKEN
    assert got[("expe-c1", "cucm1/n1", "tomcat")] == OK
    judgement = next(j for j in trust_map(parties, rels, NOW) if j.status == BROKEN)
    assert "no trusted anchor" in judgement.reason
    assert earliest_break(trust_map(parties, rels, NOW)) == NOW


def test_trusted_root_expiring_before_the_leaf_will_break_at_its_expiry(pki):
    parties, rels = deployment(pki)
    short = tuple(pki["short"].chain())
    for name in ("expe-c1", "expe-e1"):
        stores = {EXPRESSWAY_STORE: (*parties[name].stores[EXPRESSWAY_STORE], *short)}
        parties[name] = replace(parties[name], stores=stores)
    parties["expe-e1"] = replace(parties["expe-e1"], presents=pki["short_e"])
    judgements = trust_map(parties, rels, NOW)
    got = {(j.relation.presenter, j.relation.verifier): j for j in judgements}
    e_to_c = got[("expe-e1", "expe-c1")]
    assert e_to_c.status == WILL_BREAK
    assert "Short" in e_to_c.reason
    expected = min(c.not_valid_after_utc for c in pki["short"].chain())
    assert e_to_c.breaks_at == expected
    assert NOW + timedelta(days=28) < earliest_break(judgements) <= NOW + timedelta(days=31)
    assert got[("expe-c1", "expe-e1")].status == OK


def test_pending_new_ca_that_step_d_does_not_reach_will_break(pki):
    parties, rels = deployment(pki)
    pending = (pki["new_c"], *pki["new"].chain())
    parties["expe-c1"] = replace(
        parties["expe-c1"],
        pending=pending,
        # the renewal updates the E, but this config has no unified_cm: Unified CM is not reached
        step_d_reaches=frozenset({("expe-c1", EXPRESSWAY_STORE), ("expe-e1", EXPRESSWAY_STORE)}),
    )
    got = statuses(parties, rels)
    assert got[("expe-c1", "expe-e1", EXPRESSWAY_STORE)] == OK
    assert got[("expe-c1", "cucm1/n1", "callmanager")] == WILL_BREAK
    assert got[("expe-c1", "cucm1/n1", "tomcat")] == WILL_BREAK
    # Fixing it: Unified CM learns the new root.
    node = parties["cucm1/n1"]
    new_root = pki["new"].chain()[-1]
    parties["cucm1/n1"] = replace(
        node, stores={s: (*certs, new_root) for s, certs in node.stores.items()}
    )
    assert set(statuses(parties, rels).values()) == {OK}


def test_expired_anchor_is_broken_now(pki):
    parties, rels = deployment(pki)
    old_root = CA.create("Old Root", days=-1)
    old_issuing = CA.create("Old Issuing", parent=old_root)
    leaf, _ = old_issuing.issue("expe-e1", ["expe-e1"], key_kind="ec", key_size=256)
    parties["expe-e1"] = replace(
        parties["expe-e1"], presents=leaf, stores={EXPRESSWAY_STORE: tuple(old_issuing.chain())}
    )
    parties["expe-c1"] = replace(
        parties["expe-c1"],
        stores={EXPRESSWAY_STORE: (*parties["expe-c1"].stores[EXPRESSWAY_STORE], old_root.cert)},
    )
    got = statuses(parties, rels)
    assert got[("expe-e1", "expe-c1", EXPRESSWAY_STORE)] == BROKEN


def test_dot_source_renders_and_escapes(pki, tmp_path):
    parties, rels = deployment(pki)
    parties['evil"\n'] = Party('evil"\n', "expressway-e", None, {})
    rels = (*rels, *relations(parties, [("expe-c1", 'evil"\n')], []))
    dot = to_dot(parties, trust_map(parties, rels, NOW))
    assert '"evil\\"\\\\x0a"' in dot
    assert "color=grey40" in dot and "color=darkgreen" in dot
    assert statuses(parties, rels)[("expe-c1", 'evil"\n', EXPRESSWAY_STORE)] == UNKNOWN
    binary = shutil.which("dot")
    if binary is None:
        pytest.skip("graphviz not installed (make test installs it)")
    svg = subprocess.run([binary, "-Tsvg"], input=dot.encode(), capture_output=True, check=True)
    text = html.unescape(svg.stdout.decode())
    assert "<svg" in text
    assert ">expe-c1<" in text
    assert '>evil"\\x0a<' in text


def test_unified_cm_presents_one_certificate_per_service(pki):
    """SIP TLS is judged by the CallManager certificate, HTTPS by the tomcat one."""
    corp = tuple(pki["issuing"].chain())
    parties = {
        "expe-c1": Party("expe-c1", "expressway-c", pki["c_leaf"], {EXPRESSWAY_STORE: corp}),
        "cucm1/n1": Party(
            "cucm1/n1",
            "unified-cm",
            None,
            {"callmanager": corp, "tomcat": corp},
            serves={"sip-tls": (pki["new_c"], *pki["new"].chain()[:-1]), "https": (pki["e_leaf"],)},
        ),
    }
    rels = relations(parties, [], [("expe-c1", "cucm1/n1")])
    got = {
        (j.relation.presenter, j.relation.relation): j.status for j in trust_map(parties, rels, NOW)
    }
    assert got[("cucm1/n1", "sip-tls")] == BROKEN
    assert got[("cucm1/n1", "https")] == OK
    # A service whose certificate could not be read is listed, unknown.
    parties["cucm1/n1"] = replace(parties["cucm1/n1"], serves={"sip-tls": (), "https": ()})
    got = {
        (j.relation.presenter, j.relation.relation): j.status for j in trust_map(parties, rels, NOW)
    }
    assert got[("cucm1/n1", "sip-tls")] == UNKNOWN
    assert got[("cucm1/n1", "https")] == UNKNOWN
