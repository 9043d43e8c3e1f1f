"""Reading the deployment for the trust map, and the daemon's own trust map on a schedule.

`gather` reads the parties concurrently, each under its own deadline: an Expressway's trusted
CA list (REST API) and, when the monitor has not seen it yet, its server certificate; every
Unified CM node's trust stores (certmgr API). The certificate an Expressway presents is the
chain the monitor's probe captured (what it really serves), else the one its API reports. Where
an X15.5+ Expressway is the TLS client (the C on the traversal zone and towards Unified CM) it
presents its client certificate instead (Cisco doc 225693): the daemon's latest read of it
(renewers/clientcert.py, `[daemon] client_cert_check`), read here when there is none yet, the
latest read failed or found a version before X15.5 (an upgrade since shows at once); `trust-map`
reads it here. A party that cannot be read is a `Party` with `unread` set, so its relations are unknown and
the others are judged all the same; nothing waits for it longer than its deadline.

At most `concurrency` Expressways are read at once (PARTY_READS, the daemon's `[daemon]
concurrency / 4`), each deadline starting when its read does: reading all at once cost about
330 KiB of memory per Expressway at the peak (a 300-box fleet: +98 MiB; 1,000: the storm
benchmark's 483 MiB), for TLS sessions that only wait on one another.

`TrustMapper` is what the daemon runs every `[daemon] trust_map_interval`: gather, judge
(renewers/trustmap.py), draw with Graphviz when `dot` is installed, and keep the latest
result in memory for /metrics (alerts/trust.py), `/api/v1/trust-map`, `/api/v1/trust-map.svg`
and the status page. `expressway-certd trust-map` uses the same `gather`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from cryptography import x509

from expressway_certd.monitor.clientcert import (
    STATUS_NOT_APPLICABLE,
    STATUS_OK,
    STATUS_UNPUBLISHED,
    ClientCertState,
    has_client_store,
)
from expressway_certd.monitor.config import Config, ExpresswayConfig, UnifiedCMConfig
from expressway_certd.monitor.endpoint import Endpoint
from expressway_certd.monitor.errors import CertdError
from expressway_certd.monitor.probe import Observation
from expressway_certd.monitor.store import Store
from expressway_certd.monitor.text import printable
from expressway_certd.monitor.watch import EndpointState
from expressway_certd.renewers.clientcert import read_client_cert, readable
from expressway_certd.renewers.pipeline import Devices, RecordError, kind_of, record_of, trust_boxes
from expressway_certd.renewers.pipeline.record import SERVER as SERVER_KIND
from expressway_certd.renewers.trustmap import (
    EXPRESSWAY_STORE,
    ClientCopy,
    Judgement,
    Party,
    earliest_break,
    relations,
    to_dot,
    trust_map,
)

log = structlog.get_logger("expressway_certd.trustmap")

# Reads the chain served at an endpoint (monitor.probe.Prober.probe).
Probe = Callable[[str, Endpoint], Awaitable[Observation]]
READ_ERRORS = (CertdError, OSError, TimeoutError, ValueError)
DOT_TIMEOUT = 60.0  # seconds Graphviz may take for one picture


def _certs(pem: str | None) -> tuple[x509.Certificate, ...]:
    if not pem:
        return ()
    try:
        return tuple(x509.load_pem_x509_certificates(pem.encode()))
    except ValueError:
        return ()


def served_chains(states: Iterable[EndpointState]) -> dict[str, tuple[x509.Certificate, ...]]:
    """target -> the chain (leaf first) its lowest port served at its latest successful probe."""
    out: dict[str, tuple[x509.Certificate, ...]] = {}
    for state in sorted(states, key=lambda s: (s.target, s.endpoint.port, s.endpoint.host)):
        if state.target in out or state.facts is None:
            continue
        chain = _certs(state.chain_pem)
        if chain:
            out[state.target] = chain
    return out


async def pending_chains(store: Store) -> dict[str, tuple[x509.Certificate, ...]]:
    """target -> (new leaf, its chain) of each active renewal of the server certificate that
    has an issued certificate. A renewal of the X15.5 client certificate replaces nothing the
    box serves, so it never stands for the served certificate's successor."""
    rows = await store.renewals_for(None, active_only=True, limit=1000)
    out: dict[str, tuple[x509.Certificate, ...]] = {}
    for row in rows:
        if kind_of(row) != SERVER_KIND:
            continue
        try:
            issued = record_of(row).issued
        except RecordError:  # the runner blocks that renewal, naming the fault
            continue
        if issued is not None and issued.leaf_pem:
            out[row.target] = _certs(issued.leaf_pem) + _certs(issued.chain_pem)
    return out


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer before the deadline"
    return printable(str(exc)) or type(exc).__name__


def _reaches(config: Config, exp: ExpresswayConfig) -> frozenset[tuple[str, str]]:
    """The (party, store) pairs the trust stage of a renewal of `exp` updates (step D)."""
    reaches = {(b.name, EXPRESSWAY_STORE) for b in trust_boxes(config, exp)}
    if exp.role == "c" and exp.unified_cm:
        ucm = config.unified_cm(exp.unified_cm)
        reaches |= {(f"{ucm.name}/{n}", s) for n in ucm.nodes for s in ucm.trust_stores}
    return frozenset(reaches)


def client_copy(exp: ExpresswayConfig, state: ClientCertState | None) -> ClientCopy | None:
    """What `exp` presents where it opens TLS: None for its server certificate (before X15.5),
    else its client certificate, or why that is not known (then its relations are unknown)."""
    if state is None:
        if has_client_store(exp.version):
            return ClientCopy(None, "not read (no API credentials)")
        return None  # before X15.5, or the version is unknown and cannot be read: unchanged
    if state.status == STATUS_NOT_APPLICABLE:
        return None
    if state.status == STATUS_OK and state.pem:
        certs = _certs(state.pem)
        if certs:
            return ClientCopy(certs[0])
    return ClientCopy(None, printable(state.error or state.status))


async def _client_state(
    exp: ExpresswayConfig,
    devices: Devices,
    known: ClientCertState | None,
    party_seconds: float,
) -> ClientCertState | None:
    """The daemon's latest read of the client certificate (`ok` or `unpublished`); a fresh one
    when there is none, it failed, or it said "before X15.5" (the box may have been upgraded
    since: one sysinfo call), as far as the box's API can be read; None when it cannot."""
    if known is not None and known.status in (STATUS_OK, STATUS_UNPUBLISHED):
        return known
    if not readable(exp):
        return known
    return await read_client_cert(exp, devices.expressway, timeout=party_seconds)


async def read_expressway(
    config: Config,
    exp: ExpresswayConfig,
    devices: Devices,
    served: tuple[x509.Certificate, ...],
    pending: tuple[x509.Certificate, ...],
    party_seconds: float,
    client: ClientCertState | None = None,
) -> Party:
    party = Party(
        exp.name,
        f"expressway-{exp.role}" if exp.role else "expressway",
        served[0] if served else None,
        {},
        pending=pending,
        step_d_reaches=_reaches(config, exp),
        sent=served[1:] if served else None,
        version=client.version if client is not None and client.version else exp.version,
    )
    if not (exp.username and exp.password):
        # no API access: its trusted list is unknown, its certificate is seen
        return dataclasses.replace(party, client=client_copy(exp, client))

    async def read_box() -> tuple[x509.Certificate, tuple[x509.Certificate, ...]]:
        async with asyncio.timeout(party_seconds), devices.expressway(exp) as box:
            presents = party.presents or await box.server_certificate()
            return presents, tuple(await box.trusted_cas())

    # Both reads run to their end (each bounded): a failing one never leaves the other behind.
    box, state = await asyncio.gather(
        read_box(), _client_state(exp, devices, client, party_seconds), return_exceptions=True
    )
    for result in (box, state):
        if isinstance(result, BaseException) and not isinstance(result, READ_ERRORS):
            raise result
    if isinstance(box, BaseException):
        return dataclasses.replace(party, unread=f"Expressway API: {_why(box)}")
    presents, cas = box
    if isinstance(state, BaseException):
        copy: ClientCopy | None = ClientCopy(None, _why(state))
        version = party.version
    else:
        copy = client_copy(exp, state)
        version = state.version if state is not None and state.version else party.version
    return dataclasses.replace(
        party, presents=presents, stores={EXPRESSWAY_STORE: cas}, client=copy, version=version
    )


def node_endpoints(ucm: UnifiedCMConfig, node: str) -> dict[str, Endpoint]:
    """relation -> where a node serves the certificate for it: the CallManager certificate on
    SIP TLS (`sip_tls_port`), the tomcat certificate on HTTPS (Tomcat's `soap_port`)."""
    return {
        "sip-tls": Endpoint(node, ucm.sip_tls_port, "sip-tls", sni=node),
        "https": Endpoint(node, ucm.soap_port, "https", sni=node),
    }


async def _served(probe: Probe, name: str, endpoint: Endpoint) -> tuple[x509.Certificate, ...]:
    """The chain served at `endpoint`, or () when the handshake did not deliver one."""
    obs = await probe(name, endpoint)
    if not obs.ok:
        log.warning(
            "trust map: served certificate not read",
            party=name,
            endpoint=endpoint.address,
            error=obs.error or obs.error_class,
        )
    try:
        return tuple(x509.load_der_x509_certificate(der) for der in obs.chain_der)
    except ValueError:
        return ()


async def _read_node(
    cm: Any, ucm: UnifiedCMConfig, node: str, probe: Probe | None, party_seconds: float
) -> Party:
    name = f"{ucm.name}/{node}"
    where = node_endpoints(ucm, node) if probe is not None else {}

    async def stores() -> dict[str, tuple[x509.Certificate, ...]]:
        return {s: tuple(await cm.trusted(node, s)) for s in ucm.trust_stores}

    try:
        async with asyncio.timeout(party_seconds):
            read, *chains = await asyncio.gather(
                stores(), *(_served(probe, name, ep) for ep in where.values() if probe)
            )
    except READ_ERRORS as exc:
        unread = f"certmgr API: {_why(exc)}"
        return Party(name, "unified-cm", None, unread=unread, serves=dict.fromkeys(where, ()))
    assert isinstance(read, dict)
    serves = {
        rel: chain for rel, chain in zip(where, chains, strict=True) if isinstance(chain, tuple)
    }
    return Party(name, "unified-cm", None, read, serves=serves)


async def read_unified_cm(
    ucm: UnifiedCMConfig, devices: Devices, probe: Probe | None, party_seconds: float
) -> list[Party]:
    """One party per node; the nodes are read concurrently, each under its own deadline (the
    client's start has one more), so a silent node leaves the others read."""
    nodes: list[Party] = []
    try:
        async with contextlib.AsyncExitStack() as stack:
            async with asyncio.timeout(party_seconds):
                cm = await stack.enter_async_context(devices.unified_cm(ucm))
            reads = (_read_node(cm, ucm, n, probe, party_seconds) for n in ucm.nodes)
            nodes = list(await asyncio.gather(*reads))
    except READ_ERRORS as exc:
        if nodes:
            log.warning("trust map: Unified CM client did not close", ucm=ucm.name, error=_why(exc))
            return nodes
        why = f"Unified CM client: {_why(exc)}"
        return [
            Party(
                f"{ucm.name}/{n}",
                "unified-cm",
                None,
                unread=why,
                serves=dict.fromkeys(node_endpoints(ucm, n) if probe else (), ()),
            )
            for n in ucm.nodes
        ]
    return nodes


PARTY_READS = 16  # Expressways read at once by `gather` unless told otherwise


async def gather(
    config: Config,
    devices: Devices,
    pending: Mapping[str, tuple[x509.Certificate, ...]],
    served: Mapping[str, tuple[x509.Certificate, ...]],
    party_seconds: float,
    probe: Probe | None = None,
    client_certs: Mapping[str, ClientCertState] | None = None,
    concurrency: int = PARTY_READS,
) -> tuple[dict[str, Party], list[tuple[str, str]], list[tuple[str, str]]]:
    """Every party read, `concurrency` Expressways at a time (each deadline starts with its
    read); (parties, traversal pairs, (C, node) pairs). `client_certs`: the daemon's latest
    X15.5 client certificate reads, by target."""
    known = client_certs or {}
    used = {e.unified_cm for e in config.expressways if e.role == "c" and e.unified_cm}
    cms = [u for u in config.unified_cms if u.name in used]
    slots = asyncio.Semaphore(max(1, concurrency))

    async def read(exp: ExpresswayConfig) -> Party:
        async with slots:
            return await read_expressway(
                config,
                exp,
                devices,
                served.get(exp.name, ()),
                pending.get(exp.name, ()),
                party_seconds,
                known.get(exp.name),
            )

    boxes, nodes = await asyncio.gather(
        asyncio.gather(*(read(e) for e in config.expressways)),
        asyncio.gather(*(read_unified_cm(u, devices, probe, party_seconds) for u in cms)),
    )
    parties = {p.name: p for p in [*boxes, *(p for ps in nodes for p in ps)]}
    traversal = [
        (e.name, e.traversal_peer) for e in config.expressways if e.role == "c" and e.traversal_peer
    ]
    unified = [
        (e.name, f"{u.name}/{n}")
        for u in cms
        for n in u.nodes
        for e in config.expressways
        if e.role == "c" and e.unified_cm == u.name
    ]
    return parties, traversal, unified


def judgements_json(judgements: Iterable[Judgement]) -> list[dict[str, Any]]:
    return [
        {
            "from": j.relation.presenter,
            "to": j.relation.verifier,
            "relation": j.relation.relation,
            "presenter_cert": j.relation.presenter_cert,
            "store": j.relation.store,
            "status": j.status,
            "reason": j.reason,
            "breaks_at": j.breaks_at.isoformat() if j.breaks_at else None,
        }
        for j in judgements
    ]


@dataclass(frozen=True)
class TrustMapResult:
    """One computed trust map."""

    generated_at: datetime
    judgements: tuple[Judgement, ...]
    svg: bytes | None  # None when Graphviz is not installed or failed

    @property
    def earliest_break(self) -> datetime | None:
        return earliest_break(self.judgements)

    def doc(self) -> dict[str, Any]:
        """The same document as `trust-map --json` (and `<data_dir>/trust-map.json`)."""
        first = self.earliest_break
        return {
            "generated_at": self.generated_at.isoformat(),
            "relations": judgements_json(self.judgements),
            "earliest_break": first.isoformat() if first else None,
        }


async def draw(dot_source: str) -> bytes | None:
    """SVG from Graphviz `dot`, or None (logged) when it is missing or fails."""
    binary = shutil.which("dot")
    if binary is None:
        log.warning("trust map picture skipped: Graphviz 'dot' is not installed (graphviz)")
        return None
    proc = await asyncio.create_subprocess_exec(
        binary,
        "-Tsvg",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(DOT_TIMEOUT):
            out, err = await proc.communicate(dot_source.encode())
    except TimeoutError:
        proc.kill()
        await proc.wait()
        log.warning("trust map picture skipped: dot took too long", seconds=DOT_TIMEOUT)
        return None
    if proc.returncode != 0:
        log.warning("trust map picture skipped: dot failed", error=err.decode(errors="replace"))
        return None
    return out


class TrustMapper:
    """The daemon's trust map: `refresh()` recomputes it, `latest` is the last result."""

    def __init__(
        self,
        config: Callable[[], Config],
        devices: Devices,
        store: Store,
        states: Callable[[], Iterable[EndpointState]],
        *,
        timeout: float,
        probe: Probe | None = None,
        client_certs: Callable[[], Mapping[str, ClientCertState]] | None = None,
        concurrency: int = PARTY_READS,
    ) -> None:
        self._concurrency = concurrency
        self._probe = probe
        self._client_certs = client_certs
        self._config = config
        self._devices = devices
        self._store = store
        self._states = states
        self._timeout = timeout
        self.latest: TrustMapResult | None = None
        self.runs = 0

    async def refresh(self, now: datetime | None = None) -> TrustMapResult:
        config = self._config()
        try:
            pending = await pending_chains(self._store)
        except CertdError as exc:
            log.warning("trust map: pending renewals not read", error=str(exc))
            pending = {}
        served = served_chains(self._states())
        clients = dict(self._client_certs()) if self._client_certs is not None else {}
        parties, traversal, unified = await gather(
            config, self._devices, pending, served, self._timeout, self._probe, clients,
            concurrency=self._concurrency,
        )  # fmt: skip
        at = now or datetime.now(UTC)
        judgements = trust_map(parties, relations(parties, traversal, unified), at)
        result = TrustMapResult(at, judgements, await draw(to_dot(parties, judgements)))
        self.latest = result
        self.runs += 1
        for party in parties.values():
            if party.unread:
                log.warning("trust map: party not read", party=party.name, error=party.unread)
        return result
