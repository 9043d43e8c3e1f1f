"""The trust map's pure core as a table: each relation kind broken on purpose, then fixed."""

from __future__ import annotations

import html
import shutil
import subprocess
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from expressway_certd_lab.pki import CA, SERVER_AUTH

from expressway_certd.renewers.trustmap import (
    BROKEN,
    CLIENT_CERT,
    EXPRESSWAY_STORE,
    OK,
    SERVER_CERT,
    UNKNOWN,
    WILL_BREAK,
    ClientCopy,
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


# --- X15.5: the side that opens TLS presents its client certificate (Cisco doc 225693) -------


def x15_5(pki, client, version="X15.5"):
    """The deployment with an X15.5 C whose client store holds `client` (a ClientCopy)."""
    parties, _ = deployment(pki)
    parties["expe-c1"] = replace(parties["expe-c1"], client=client, version=version)
    parties["expe-e1"] = replace(parties["expe-e1"], version=version)
    rels = relations(parties, [("expe-c1", "expe-e1")], [("expe-c1", "cucm1/n1")])
    return parties, rels


def judged(parties, rels):
    return {
        (j.relation.presenter, j.relation.verifier, j.relation.store): j
        for j in trust_map(parties, rels, NOW)
    }


def test_x15_5_client_copy_under_another_ca_breaks_traversal_though_the_served_cert_is_fine(pki):
    other = CA.create("Other Issuing", parent=CA.create("Other Root"))
    copy, _ = other.issue("expe-c1", ["expe-c1"], key_kind="ec", key_size=256)
    parties, rels = x15_5(pki, ClientCopy(copy))
    got = judged(parties, rels)
    c_to_e = got[("expe-c1", "expe-e1", EXPRESSWAY_STORE)]
    assert c_to_e.relation.presenter_cert == CLIENT_CERT
    assert c_to_e.relation.presenter_label == "expe-c1 (client cert)"
    assert c_to_e.status == BROKEN
    assert "client certificate" in c_to_e.reason and "Other" in c_to_e.reason
    # The C also opens SIP TLS and HTTPS to Unified CM with it.
    assert got[("expe-c1", "cucm1/n1", "callmanager")].status == BROKEN
    assert got[("expe-c1", "cucm1/n1", "tomcat")].status == BROKEN
    # The E -> C direction is the E's served certificate (the E is the TLS server): ok.
    e_to_c = got[("expe-e1", "expe-c1", EXPRESSWAY_STORE)]
    assert (e_to_c.status, e_to_c.relation.presenter_cert) == (OK, SERVER_CERT)
    # The same boxes judged by the served certificate (the mistake) would be ok:
    assert parties["expe-c1"].presents == pki["c_leaf"]
    # Fixing it: the E trusts the other CA; the C's own list chains its copy.
    e, c = parties["expe-e1"], parties["expe-c1"]
    parties["expe-e1"] = replace(
        e, stores={EXPRESSWAY_STORE: (*e.stores[EXPRESSWAY_STORE], other.chain()[-1])}
    )
    parties["expe-c1"] = replace(
        c, stores={EXPRESSWAY_STORE: (*c.stores[EXPRESSWAY_STORE], *other.chain())}
    )
    got = judged(parties, rels)
    assert got[("expe-c1", "expe-e1", EXPRESSWAY_STORE)].status == OK
    assert got[("expe-c1", "cucm1/n1", "callmanager")].status == BROKEN  # not told yet


def test_x15_5_client_copy_without_client_auth_is_broken(pki):
    copy, _ = pki["issuing"].issue(
        "expe-c1", ["expe-c1"], eku=[SERVER_AUTH], key_kind="ec", key_size=256
    )
    parties, rels = x15_5(pki, ClientCopy(copy))
    c_to_e = judged(parties, rels)[("expe-c1", "expe-e1", EXPRESSWAY_STORE)]
    assert c_to_e.status == BROKEN
    assert "TLS Web Client Authentication" in c_to_e.reason
    assert c_to_e.breaks_at == NOW
    # A copy with clientAuth (the lab's default: both EKUs) from the same CA is fine.
    good, _ = pki["issuing"].issue("expe-c1", ["expe-c1"], key_kind="ec", key_size=256)
    parties, rels = x15_5(pki, ClientCopy(good))
    assert {j.status for j in trust_map(parties, rels, NOW)} == {OK}


@pytest.mark.parametrize(
    "why",
    [
        "expe-c1: read client certificate: the box's /api/raml lists no client certificate resource",
        "",
    ],
)
def test_x15_5_unreadable_client_copy_is_unknown_never_ok(pki, why):
    parties, rels = x15_5(pki, ClientCopy(None, why))
    got = judged(parties, rels)
    for key in [
        ("expe-c1", "expe-e1", EXPRESSWAY_STORE),
        ("expe-c1", "cucm1/n1", "callmanager"),
        ("expe-c1", "cucm1/n1", "tomcat"),
    ]:
        assert got[key].status == UNKNOWN
        assert got[key].reason.startswith("expe-c1's client certificate not readable: ")
        assert (why or "not read") in got[key].reason
    assert got[("expe-e1", "expe-c1", EXPRESSWAY_STORE)].status == OK


def test_x15_4_presents_its_server_certificate_unchanged(pki):
    parties, rels = x15_5(pki, None, version="X15.4")
    got = judged(parties, rels)
    assert {j.relation.presenter_cert for j in got.values()} == {SERVER_CERT}
    assert {j.status for j in got.values()} == {OK}
    assert got[("expe-c1", "expe-e1", EXPRESSWAY_STORE)].relation.presenter_label == "expe-c1"
    # And its server certificate is what breaks it: the E no longer trusts the C's CA.
    parties["expe-e1"] = replace(parties["expe-e1"], stores={EXPRESSWAY_STORE: ()})
    assert judged(parties, rels)[("expe-c1", "expe-e1", EXPRESSWAY_STORE)].status == BROKEN


def test_x15_5_client_copy_under_a_root_expiring_first_will_break(pki):
    short = pki["short"]
    copy, _ = short.issue("expe-c1", ["expe-c1"], days=365, key_kind="ec", key_size=256)
    parties, rels = x15_5(pki, ClientCopy(copy))
    e = parties["expe-e1"]
    parties["expe-e1"] = replace(
        e, stores={EXPRESSWAY_STORE: (*e.stores[EXPRESSWAY_STORE], short.chain()[-1])}
    )
    c = parties["expe-c1"]
    parties["expe-c1"] = replace(
        c, stores={EXPRESSWAY_STORE: (*c.stores[EXPRESSWAY_STORE], *short.chain())}
    )
    c_to_e = judged(parties, rels)[("expe-c1", "expe-e1", EXPRESSWAY_STORE)]
    assert c_to_e.status == WILL_BREAK
    assert c_to_e.breaks_at == min(x.not_valid_after_utc for x in short.chain())
    assert "client certificate" in c_to_e.reason and "Short" in c_to_e.reason


def test_x15_5_pending_server_renewal_does_not_judge_the_client_relation(pki):
    """The pending renewal replaces the server certificate; the client copy still presents."""
    copy, _ = pki["issuing"].issue("expe-c1", ["expe-c1"], key_kind="ec", key_size=256)
    parties, rels = x15_5(pki, ClientCopy(copy))
    parties["expe-c1"] = replace(parties["expe-c1"], pending=(pki["new_c"], *pki["new"].chain()))
    got = judged(parties, rels)
    assert got[("expe-c1", "cucm1/n1", "callmanager")].status == OK


def test_dot_labels_the_client_certificate(pki):
    copy, _ = pki["issuing"].issue("expe-c1", ["expe-c1"], key_kind="ec", key_size=256)
    parties, rels = x15_5(pki, ClientCopy(copy))
    dot = to_dot(parties, trust_map(parties, rels, NOW))
    assert '"traversal (trusted-ca)\\nclient cert\\nok"' in dot
