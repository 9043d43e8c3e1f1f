"""The trust map: every TLS relation of a deployment, and whether each verifier trusts its peer.

Pure. Parties are Expressways and Unified CM nodes with the certificates they present and the
trust stores they verify with; `relations` lists who verifies whom (Cisco's step D list:
traversal zone C <-> E, Expressway-C <-> Unified CM over SIP TLS and HTTPS, where a node
presents its CallManager certificate for SIP TLS and its tomcat one for HTTPS); `judge` says for
each relation:

- ok
- broken: the presented chain does not build to a self-signed anchor in the verifier's
  store (signatures checked), or a certificate on the path is outside its validity now;
- will break: a CA certificate on the path expires before the leaf it anchors (the relation
  breaks at that moment), or a pending renewal's new chain is not trusted by a verifier that
  the pipeline's step D does not update.

A presenter sends its leaf plus the CA certificates from its own trusted list that chain it
(an Expressway builds its chain from that list); the verifier supplies only anchors.

Which certificate presents (`Relation.presenter_cert`): the side that opens TLS is the client
of the relation (the Expressway-C on the traversal zone and towards Unified CM). Before X15.5
it presents its server certificate; from X15.5 it presents its CLIENT certificate, a store of
its own (Cisco doc 225693), given as `Party.client`. A client presenter must chain to the
verifier's anchors and carry TLS Web Client Authentication (monitor.eku, cert_kind "client");
when its client certificate could not be read the relation is unknown, never judged from the
server certificate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509

from expressway_certd.monitor.eku import eku_problem
from expressway_certd.monitor.facts import facts_from_x509
from expressway_certd.monitor.text import printable
from expressway_certd.renewers.handcheck import build_path, fingerprint

OK, BROKEN, WILL_BREAK, UNKNOWN = "ok", "broken", "will break", "unknown"
SERVER_CERT, CLIENT_CERT = "server", "client"  # Relation.presenter_cert


@dataclass(frozen=True)
class ClientCopy:
    """What an X15.5+ Expressway presents when it opens TLS: its client certificate, or why
    that is not known (`unread`: unpublished, a failed read, not read)."""

    cert: x509.Certificate | None
    unread: str = ""


@dataclass(frozen=True)
class Party:
    name: str
    kind: str  # "expressway-c", "expressway-e", "unified-cm"
    presents: x509.Certificate | None  # the leaf it serves / presents as a client
    stores: Mapping[str, tuple[x509.Certificate, ...]] = field(default_factory=dict)
    pending: tuple[x509.Certificate, ...] = ()  # a renewal's new leaf and chain, not installed yet
    step_d_reaches: frozenset[tuple[str, str]] = frozenset()  # (party, store) a renewal updates
    # The CA certificates seen sent after the leaf (a probe's served chain); None: assume the
    # chain the presenter builds from its own trusted list.
    sent: tuple[x509.Certificate, ...] | None = None
    unread: str = ""  # why this party could not be read; every relation it is in is unknown
    # relation -> the chain (leaf first) served for it, when it differs by service: a Unified
    # CM node serves its CallManager certificate for SIP TLS and its tomcat one for HTTPS.
    serves: Mapping[str, tuple[x509.Certificate, ...]] = field(default_factory=dict)
    # X15.5+: the client certificate store, presented where this party opens TLS; None: the
    # party presents its server certificate as a TLS client too (before X15.5).
    client: ClientCopy | None = None
    version: str | None = None  # as the box reported it (for the EKU rule's wording)


@dataclass(frozen=True)
class Relation:
    presenter: str
    verifier: str
    store: str  # the verifier's trust store used for this relation
    relation: str  # "traversal", "sip-tls", "https"
    presenter_cert: str = SERVER_CERT  # which of the presenter's certificates it presents

    @property
    def presenter_label(self) -> str:
        """ "expe-c1 (client cert)" when the X15.5 client certificate presents, else the name."""
        if self.presenter_cert == CLIENT_CERT:
            return f"{self.presenter} (client cert)"
        return self.presenter


@dataclass(frozen=True)
class Judgement:
    relation: Relation
    status: str
    reason: str
    breaks_at: datetime | None  # now for broken, the future moment for will break


EXPRESSWAY_STORE = "trusted-ca"


def _as_client(parties: Mapping[str, Party], name: str) -> str:
    """Which certificate `name` presents where it opens TLS: its client store from X15.5."""
    party = parties.get(name)
    return CLIENT_CERT if party is not None and party.client is not None else SERVER_CERT


def relations(
    parties: Mapping[str, Party],
    traversal: Sequence[tuple[str, str]],
    unified_cm: Sequence[tuple[str, str]],
    ucm_stores: Sequence[str] = ("callmanager", "tomcat"),
) -> tuple[Relation, ...]:
    """`traversal`: (Expressway-C, Expressway-E) zone pairs; `unified_cm`: (C, node) pairs."""
    out: list[Relation] = []
    for c, e in traversal:
        # Mutual TLS: the E verifies the C's client certificate, the C verifies the E.
        out.append(Relation(c, e, EXPRESSWAY_STORE, "traversal", _as_client(parties, c)))
        out.append(Relation(e, c, EXPRESSWAY_STORE, "traversal"))
    for c, node in unified_cm:
        names = {"callmanager": "sip-tls", "tomcat": "https"}
        for store in ucm_stores:  # the C opens SIP TLS and HTTPS to the node: the TLS client
            out.append(Relation(c, node, store, names.get(store, store), _as_client(parties, c)))
        party = parties.get(node)
        if party is None:
            continue
        # The C verifies the node's certificates against its trusted CA list.
        for relation in sorted(party.serves) or (["sip-tls"] if party.presents else []):
            out.append(Relation(node, c, EXPRESSWAY_STORE, relation))
    return tuple(out)


def _path(
    leaf: x509.Certificate, sent: Sequence[x509.Certificate], anchors: Sequence[x509.Certificate]
) -> tuple[tuple[x509.Certificate, ...], bool]:
    """The path from `leaf`, and whether it ends on a self-signed certificate of `anchors`."""
    path = build_path(leaf, [*sent, *anchors])
    anchor_prints = {fingerprint(a) for a in anchors}
    top = path[-1]
    return path, top.subject == top.issuer and fingerprint(top) in anchor_prints


def _name(cert: x509.Certificate) -> str:
    return printable(cert.subject.rfc4514_string())


def _check_chain(
    leaf: x509.Certificate,
    sent: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    now: datetime,
) -> tuple[str, str, datetime | None]:
    path, anchored = _path(leaf, sent, anchors)
    if not anchored:
        top = path[-1]
        return BROKEN, f"no trusted anchor for '{printable(top.issuer.rfc4514_string())}'", now
    for cert in path:
        if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
            return BROKEN, f"'{_name(cert)}' is outside its validity", now
    early = [c for c in path[1:] if c.not_valid_after_utc < leaf.not_valid_after_utc]
    if early:
        first = min(early, key=lambda c: c.not_valid_after_utc)
        return (
            WILL_BREAK,
            f"'{_name(first)}' expires {first.not_valid_after_utc:%Y-%m-%d}, before the "
            f"certificate it anchors ({leaf.not_valid_after_utc:%Y-%m-%d})",
            first.not_valid_after_utc,
        )
    return OK, "", None


def _sent(party: Party, leaf: x509.Certificate) -> tuple[x509.Certificate, ...]:
    if party.sent is not None:
        return party.sent
    own = party.stores.get(EXPRESSWAY_STORE, ())
    return build_path(leaf, own)[1:]


def client_eku_problem(party: Party, cert: x509.Certificate) -> str | None:
    """None when `cert` may present as a TLS client certificate (clientAuth, or no EKU
    extension), else what is missing: monitor.eku's rule for the X15.5 client certificate."""
    role = party.kind.removeprefix("expressway-") if party.kind.startswith("expressway-") else None
    return eku_problem(facts_from_x509(cert), party.version, role, cert_kind=CLIENT_CERT)


def _judge_client(
    rel: Relation, presenter: Party, anchors: Sequence[x509.Certificate], now: datetime
) -> Judgement:
    """The presenter opens TLS with its X15.5 client certificate (Cisco doc 225693)."""
    client = presenter.client
    if client is None or client.cert is None:
        why = client.unread if client is not None and client.unread else "not read"
        return Judgement(
            rel, UNKNOWN, f"{rel.presenter}'s client certificate not readable: {why}", None
        )
    leaf = client.cert
    sent = build_path(leaf, presenter.stores.get(EXPRESSWAY_STORE, ()))[1:]
    status, reason, at = _check_chain(leaf, sent, anchors, now)
    if status == BROKEN:
        return Judgement(rel, status, f"client certificate: {reason}", at)
    problem = client_eku_problem(presenter, leaf)
    if problem:
        return Judgement(
            rel,
            BROKEN,
            f"client certificate '{_name(leaf)}' {problem}; {rel.verifier} refuses it while "
            "EKU checking is on",
            now,
        )
    return Judgement(rel, status, f"client certificate: {reason}" if reason else "", at)


def judge(rel: Relation, parties: Mapping[str, Party], now: datetime) -> Judgement:
    presenter, verifier = parties.get(rel.presenter), parties.get(rel.verifier)
    for party in (presenter, verifier):
        if party is not None and party.unread:
            return Judgement(rel, UNKNOWN, f"{party.name} was not read: {party.unread}", None)
    if rel.presenter_cert == CLIENT_CERT and presenter is not None:
        if verifier is None or rel.store not in verifier.stores:
            return Judgement(rel, UNKNOWN, f"{rel.verifier}'s {rel.store} store was not read", None)
        # A pending renewal of the server certificate does not change what presents here.
        return _judge_client(rel, presenter, verifier.stores[rel.store], now)
    served = presenter.serves.get(rel.relation) if presenter is not None else None
    if presenter is None or not (served or presenter.presents):
        return Judgement(rel, UNKNOWN, f"{rel.presenter}'s certificate was not read", None)
    if verifier is None or rel.store not in verifier.stores:
        return Judgement(rel, UNKNOWN, f"{rel.verifier}'s {rel.store} store was not read", None)
    anchors = verifier.stores[rel.store]
    if served:
        leaf, sent = served[0], served[1:]
    else:
        assert presenter.presents is not None
        leaf, sent = presenter.presents, _sent(presenter, presenter.presents)
    status, reason, at = _check_chain(leaf, sent, anchors, now)
    if status == BROKEN or not presenter.pending:
        return Judgement(rel, status, reason, at)
    new_leaf, *new_chain = presenter.pending
    if (rel.verifier, rel.store) in presenter.step_d_reaches:
        return Judgement(rel, status, reason, at)
    new_status, _, _ = _check_chain(new_leaf, new_chain, anchors, now)
    if new_status == BROKEN:
        return Judgement(
            rel,
            WILL_BREAK,
            f"the pending renewal's new CA '{printable(new_leaf.issuer.rfc4514_string())}' is "
            f"not trusted by {rel.verifier} ({rel.store}), which the renewal does not update; "
            f"upload it there before the new certificate is installed",
            now,
        )
    return Judgement(rel, status, reason, at)


def trust_map(
    parties: Mapping[str, Party], rels: Sequence[Relation], now: datetime
) -> tuple[Judgement, ...]:
    return tuple(judge(r, parties, now) for r in rels)


def earliest_break(judgements: Sequence[Judgement]) -> datetime | None:
    times = [j.breaks_at for j in judgements if j.breaks_at is not None]
    return min(times) if times else None


# --- pictures -------------------------------------------------------------------------------

_COLOURS = {OK: "darkgreen", BROKEN: "red", WILL_BREAK: "darkorange", UNKNOWN: "grey40"}


def _dot_string(*lines: str) -> str:
    """A quoted DOT string; `lines` joined by DOT's line break, everything else literal."""
    parts = [printable(line).replace("\\", "\\\\").replace('"', '\\"') for line in lines]
    return '"' + "\\n".join(parts) + '"'


def to_dot(parties: Mapping[str, Party], judgements: Sequence[Judgement]) -> str:
    """Graphviz source: one node per party, one edge per relation (presenter -> verifier)."""
    lines = ["digraph trust {", "  rankdir=LR;", '  node [shape=box, fontname="sans-serif"];']
    names = sorted(
        {
            *parties,
            *(j.relation.presenter for j in judgements),
            *(j.relation.verifier for j in judgements),
        }
    )
    for name in names:
        kind = parties[name].kind if name in parties else "?"
        lines.append(f"  {_dot_string(name)} [label={_dot_string(name, kind)}];")
    for j in judgements:
        r = j.relation
        label = _dot_string(
            f"{r.relation} ({r.store})",
            *(["client cert"] if r.presenter_cert == CLIENT_CERT else []),
            j.status,
        )
        lines.append(
            f"  {_dot_string(r.presenter)} -> {_dot_string(r.verifier)} "
            f"[label={label}, color={_COLOURS[j.status]}, "
            f"fontcolor={_COLOURS[j.status]}, penwidth={3 if j.status != OK else 1}];"
        )
    lines.append("}")
    return "\n".join(lines) + "\n"
