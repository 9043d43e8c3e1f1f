"""Reading the deployment for the trust map (expressway_certd/trustmap_live.py) with fake device
clients: one party that never answers or fails leaves only its own relations unknown and does
not hold up the others; the chain the probe saw served is what a presenter is judged by."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from expressway_certd_lab.pki import CA

from expressway_certd.config import load_config
from expressway_certd.monitor.clientcert import (
    STATUS_ERROR,
    STATUS_NOT_APPLICABLE,
    STATUS_OK,
    ClientCertState,
)
from expressway_certd.monitor.config import Config, ExpresswayConfig, UnifiedCMConfig
from expressway_certd.monitor.endpoint import Endpoint
from expressway_certd.monitor.errors import DeviceError
from expressway_certd.monitor.probe import Observation
from expressway_certd.monitor.store import RenewalRow
from expressway_certd.renewers.expressway import OperationUnsupported, SystemInfo
from expressway_certd.renewers.pipeline.record import CLIENT, IssuedCert, RenewalRecord
from expressway_certd.renewers.trustmap import (
    BROKEN,
    CLIENT_CERT,
    OK,
    SERVER_CERT,
    UNKNOWN,
    relations,
    trust_map,
)
from expressway_certd.trustmap_live import gather, pending_chains

NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def pki() -> dict[str, Any]:
    issuing = CA.create("Corp Issuing", parent=CA.create("Corp Root"))
    other = CA.create("Other Issuing", parent=CA.create("Other Root"))
    return {
        "corp": tuple(issuing.chain()),
        "other": other,
        "c": issuing.issue("expe-c1", ["expe-c1"], key_kind="ec", key_size=256)[0],
        "e": issuing.issue("expe-e1", ["expe-e1"], key_kind="ec", key_size=256)[0],
    }


def config(tmp_path: Path) -> Config:
    secret = tmp_path / "pw"
    secret.write_text("pw")
    secret.chmod(0o600)
    path = tmp_path / "certd.toml"
    path.write_text(
        f"""
[daemon]
state = "{tmp_path / "state.db"}"

[[expressway]]
name = "expe-c1"
address = "c.example.com"
role = "c"
username = "admin"
password = "file:{secret}"
traversal_peer = "expe-e1"
unified_cm = "cucm1"

[[expressway]]
name = "expe-e1"
address = "e.example.com"
role = "e"
username = "admin"
password = "file:{secret}"
traversal_peer = "expe-c1"

[[unified_cm]]
name = "cucm1"
nodes = ["n1", "n2"]
username = "admin"
password = "file:{secret}"
"""
    )
    return load_config(path)


class FakeBox:
    """`client`: the X15.5 client certificate; None: the box lists no resource for it."""

    def __init__(
        self,
        leaf: x509.Certificate,
        cas: tuple[x509.Certificate, ...],
        version: str = "X15.4",
        client: x509.Certificate | None = None,
    ) -> None:
        self.leaf, self.cas, self.version, self.client = leaf, cas, version, client
        self.client_reads = 0

    async def system_info(self) -> SystemInfo:
        return SystemInfo("box", self.version, None)

    async def client_certificate(self) -> x509.Certificate:
        self.client_reads += 1
        if self.client is None:
            raise OperationUnsupported("box: read client certificate: no resource in /api/raml")
        return self.client

    async def server_certificate(self) -> x509.Certificate:
        return self.leaf

    async def trusted_cas(self) -> list[x509.Certificate]:
        return list(self.cas)


class FakeCucm:
    def __init__(self, stores: Mapping[str, tuple[x509.Certificate, ...]], hang: set[str]):
        self.stores, self.hang = stores, hang

    async def trusted(self, node: str, store: str) -> list[x509.Certificate]:
        if node in self.hang:
            await asyncio.Event().wait()  # never answers
        return list(self.stores[store])


class FakeDevices:
    """Boxes by name; a name in `hang` never answers, one in `fail` refuses."""

    def __init__(
        self,
        boxes: Mapping[str, FakeBox],
        cucm: FakeCucm,
        hang: frozenset[str] = frozenset(),
        fail: frozenset[str] = frozenset(),
    ) -> None:
        self.boxes, self.cucm, self.hang, self.fail = boxes, cucm, hang, fail
        self.opened: list[str] = []

    @asynccontextmanager
    async def expressway(self, target: ExpresswayConfig) -> AsyncIterator[Any]:
        self.opened.append(target.name)
        if target.name in self.hang:
            await asyncio.Event().wait()
        if target.name in self.fail:
            raise DeviceError(f"{target.name}: connection refused")
        yield self.boxes[target.name]

    @asynccontextmanager
    async def unified_cm(self, ucm: UnifiedCMConfig) -> AsyncIterator[Any]:
        yield self.cucm


def statuses(
    cfg: Config,
    devices: FakeDevices,
    served: Mapping[str, Any] = {},
    clients: Mapping[str, ClientCertState] | None = None,
) -> dict:
    async def run() -> dict:
        parties, traversal, unified = await gather(
            cfg, devices, {}, served, 0.2, client_certs=clients
        )
        judged = trust_map(parties, relations(parties, traversal, unified), NOW)
        return {(j.relation.presenter, j.relation.verifier, j.relation.store): j for j in judged}

    return asyncio.run(run())


def devices(pki: dict[str, Any], **kw: Any) -> FakeDevices:
    boxes = {"expe-c1": FakeBox(pki["c"], pki["corp"]), "expe-e1": FakeBox(pki["e"], pki["corp"])}
    cucm = FakeCucm({"tomcat": pki["corp"], "callmanager": pki["corp"]}, kw.pop("cucm_hang", set()))
    return FakeDevices(boxes, cucm, **kw)


def test_all_read_all_ok(tmp_path: Path, pki: dict[str, Any]) -> None:
    got = statuses(config(tmp_path), devices(pki))
    assert {k: j.status for k, j in got.items()} == {
        ("expe-c1", "expe-e1", "trusted-ca"): OK,
        ("expe-e1", "expe-c1", "trusted-ca"): OK,
        ("expe-c1", "cucm1/n1", "tomcat"): OK,
        ("expe-c1", "cucm1/n1", "callmanager"): OK,
        ("expe-c1", "cucm1/n2", "tomcat"): OK,
        ("expe-c1", "cucm1/n2", "callmanager"): OK,
    }


def test_a_box_that_never_answers_leaves_only_its_relations_unknown(
    tmp_path: Path, pki: dict[str, Any]
) -> None:
    # The E hangs forever: gather returns (its deadline), and the C's relations to Unified CM
    # are judged all the same.
    got = statuses(config(tmp_path), devices(pki, hang=frozenset({"expe-e1"})))
    assert got[("expe-c1", "expe-e1", "trusted-ca")].status == UNKNOWN
    assert got[("expe-e1", "expe-c1", "trusted-ca")].status == UNKNOWN
    assert "expe-e1 was not read" in got[("expe-c1", "expe-e1", "trusted-ca")].reason
    assert "deadline" in got[("expe-c1", "expe-e1", "trusted-ca")].reason
    assert got[("expe-c1", "cucm1/n1", "tomcat")].status == OK
    assert got[("expe-c1", "cucm1/n2", "callmanager")].status == OK


def test_a_refusing_box_and_a_silent_node(tmp_path: Path, pki: dict[str, Any]) -> None:
    got = statuses(config(tmp_path), devices(pki, fail=frozenset({"expe-e1"}), cucm_hang={"n2"}))
    assert "connection refused" in got[("expe-e1", "expe-c1", "trusted-ca")].reason
    assert got[("expe-c1", "cucm1/n2", "tomcat")].status == UNKNOWN
    assert got[("expe-c1", "cucm1/n1", "tomcat")].status == OK  # the other node is read


def test_the_served_chain_is_judged_not_the_api_certificate(
    tmp_path: Path, pki: dict[str, Any]
) -> None:
    # The probe saw the E serve a certificate of another CA (say, installed by hand); the API
    # still reports the old one. The C does not trust the other CA: broken.
    other_leaf, _ = pki["other"].issue("expe-e1", ["expe-e1"], key_kind="ec", key_size=256)
    served = {"expe-e1": (other_leaf, *pki["other"].chain()[:-1])}
    got = statuses(config(tmp_path), devices(pki), served)
    assert got[("expe-e1", "expe-c1", "trusted-ca")].status == BROKEN
    assert got[("expe-c1", "expe-e1", "trusted-ca")].status == OK


def test_unified_cm_served_certificates_by_port(tmp_path: Path, pki: dict[str, Any]) -> None:
    """SIP TLS (5061) is read for the CallManager certificate, Tomcat's 8443 for the tomcat
    one; a port that gives no certificate leaves that relation unknown, not missing."""
    seen: list[tuple[str, int]] = []
    tomcat = pki["other"].issue("n1", ["n1"], key_kind="ec", key_size=256)[0]

    async def probe(name: str, endpoint: Endpoint) -> Observation:
        seen.append((endpoint.host, endpoint.port))
        if endpoint.port == 5061:
            return Observation(name, endpoint, NOW, False, "refused", "connection refused")
        der = tomcat.public_bytes(serialization.Encoding.DER)
        return Observation(name, endpoint, NOW, True, chain_der=(der,))

    async def run() -> dict:
        parties, traversal, unified = await gather(
            config(tmp_path), devices(pki), {}, {}, 0.2, probe
        )
        judged = trust_map(parties, relations(parties, traversal, unified), NOW)
        return {(j.relation.presenter, j.relation.verifier, j.relation.relation): j for j in judged}

    got = asyncio.run(run())
    assert sorted(seen) == [("n1", 5061), ("n1", 8443), ("n2", 5061), ("n2", 8443)]
    assert got[("cucm1/n1", "expe-c1", "sip-tls")].status == UNKNOWN
    https = got[("cucm1/n1", "expe-c1", "https")]
    assert https.status == BROKEN  # the C does not trust the Other CA
    assert "Other" in https.reason


# --- X15.5: the C presents its client certificate where it opens TLS -----------------------


def x15_5(pki: dict[str, Any], client: x509.Certificate | None) -> FakeDevices:
    d = devices(pki)
    d.boxes = {
        "expe-c1": FakeBox(pki["c"], pki["corp"], "X15.5", client),
        "expe-e1": FakeBox(pki["e"], pki["corp"], "X15.5", pki["e"]),
    }
    return d


def state(
    name: str, status: str, cert: x509.Certificate | None = None, **kw: Any
) -> ClientCertState:
    pem = cert.public_bytes(serialization.Encoding.PEM).decode() if cert is not None else None
    return ClientCertState(name, "h", 443, status, NOW, version="X15.5", pem=pem, **kw)


def test_x15_5_the_daemons_client_read_presents_on_traversal(
    tmp_path: Path, pki: dict[str, Any]
) -> None:
    other = pki["other"].issue("expe-c1", ["expe-c1"], key_kind="ec", key_size=256)[0]
    d = x15_5(pki, pki["c"])  # the box itself would give a good copy: the daemon's read is used
    got = statuses(config(tmp_path), d, clients={"expe-c1": state("expe-c1", STATUS_OK, other)})
    c_to_e = got[("expe-c1", "expe-e1", "trusted-ca")]
    assert (c_to_e.status, c_to_e.relation.presenter_cert) == (BROKEN, CLIENT_CERT)
    assert got[("expe-e1", "expe-c1", "trusted-ca")].relation.presenter_cert == SERVER_CERT
    assert d.boxes["expe-c1"].client_reads == 0


def test_x15_5_not_yet_read_or_failed_is_read_by_the_map(
    tmp_path: Path, pki: dict[str, Any]
) -> None:
    other = pki["other"].issue("expe-c1", ["expe-c1"], key_kind="ec", key_size=256)[0]
    for clients in (None, {"expe-c1": state("expe-c1", STATUS_ERROR, error="expe-c1: timeout")}):
        d = x15_5(pki, other)
        got = statuses(config(tmp_path), d, clients=clients)
        assert got[("expe-c1", "expe-e1", "trusted-ca")].status == BROKEN
        assert got[("expe-c1", "cucm1/n1", "callmanager")].status == BROKEN
        assert d.boxes["expe-c1"].client_reads == 1


def test_x15_5_unpublished_client_certificate_is_unknown(
    tmp_path: Path, pki: dict[str, Any]
) -> None:
    got = statuses(config(tmp_path), x15_5(pki, None))
    for key in [("expe-c1", "expe-e1", "trusted-ca"), ("expe-c1", "cucm1/n2", "tomcat")]:
        assert got[key].status == UNKNOWN
        assert "client certificate not readable" in got[key].reason
        assert "no resource in /api/raml" in got[key].reason
    assert got[("expe-e1", "expe-c1", "trusted-ca")].status == OK


def test_x15_4_box_presents_its_server_certificate(tmp_path: Path, pki: dict[str, Any]) -> None:
    d = devices(pki)
    got = statuses(config(tmp_path), d)
    assert {j.relation.presenter_cert for j in got.values()} == {SERVER_CERT}
    assert {j.status for j in got.values()} == {OK}
    # sysinfo said X15.4: no client store, so its resource was never asked for
    assert {b.client_reads for b in d.boxes.values()} == {0}


def test_an_upgrade_since_the_daemons_read_is_seen_at_once(
    tmp_path: Path, pki: dict[str, Any]
) -> None:
    """The daemon read the C before its upgrade (not_applicable); the map asks again, finds
    X15.5 and judges with the client copy, not with the served certificate."""
    other = pki["other"].issue("expe-c1", ["expe-c1"], key_kind="ec", key_size=256)[0]
    before = ClientCertState("expe-c1", "h", 443, STATUS_NOT_APPLICABLE, NOW, version="X15.4")
    d = x15_5(pki, other)
    got = statuses(config(tmp_path), d, clients={"expe-c1": before})
    c_to_e = got[("expe-c1", "expe-e1", "trusted-ca")]
    assert (c_to_e.status, c_to_e.relation.presenter_cert) == (BROKEN, CLIENT_CERT)
    assert d.boxes["expe-c1"].client_reads == 1


class _Renewals:
    """A store that answers `renewals_for` with the rows given (what pending_chains reads)."""

    def __init__(self, rows: list[RenewalRow]) -> None:
        self.rows = rows

    async def renewals_for(self, *_: Any, **__: Any) -> list[RenewalRow]:
        return self.rows


def _active_renewal(rid: str, target: str, record: RenewalRecord) -> RenewalRow:
    now = datetime(2026, 12, 3, tzinfo=UTC)
    return RenewalRow(
        rid, target, "waiting", "approve", "expiry", now, now, None, 0, "", record.to_data()
    )


async def test_a_pending_client_certificate_renewal_is_not_the_served_certificates_successor() -> (
    None
):
    ca = CA.create("Pending CA")
    leaf, _ = ca.issue("expe-c1.example.com", ["expe-c1.example.com"])
    pem = leaf.public_bytes(serialization.Encoding.PEM).decode()
    issued = IssuedCert(pem, ca.cert.public_bytes(serialization.Encoding.PEM).decode())
    rows = [
        _active_renewal("r1", "expe-c1", RenewalRecord(issued=issued, kind=CLIENT)),
        _active_renewal("r2", "expe-e1", RenewalRecord(issued=issued)),
    ]
    pending = await pending_chains(_Renewals(rows))  # type: ignore[arg-type]
    assert set(pending) == {"expe-e1"}
    assert pending["expe-e1"][0] == leaf


class CountingDevices(FakeDevices):
    """Counts the boxes being read (a box's reads may open two clients); each read waits
    until the test lets reads go."""

    def __init__(self, boxes: Mapping[str, FakeBox], cucm: FakeCucm, expect: int) -> None:
        super().__init__(boxes, cucm)
        self.reading: dict[str, int] = {}
        self.most = 0
        self.expect = expect
        self.started = asyncio.Event()  # `expect` boxes are being read
        self.go = asyncio.Event()

    @asynccontextmanager
    async def expressway(self, target: ExpresswayConfig) -> AsyncIterator[Any]:
        self.reading[target.name] = self.reading.get(target.name, 0) + 1
        self.most = max(self.most, len(self.reading))
        if len(self.reading) >= self.expect:
            self.started.set()
        try:
            await self.go.wait()
            async with super().expressway(target) as box:
                yield box
        finally:
            self.reading[target.name] -= 1
            if not self.reading[target.name]:
                del self.reading[target.name]


async def test_at_most_concurrency_boxes_are_read_at_once_and_every_one_is_read(
    tmp_path: Path, pki: dict[str, Any]
) -> None:
    """Reading every box at once cost ~330 KiB a box at the peak (TLS sessions that only
    wait): the daemon reads `concurrency` at a time, each under its own deadline."""
    secret = tmp_path / "pw"
    secret.write_text("pw")
    secret.chmod(0o600)
    text = f'[daemon]\nstate = "{tmp_path / "state.db"}"\n'
    for i in range(10):
        text += (
            f'[[expressway]]\nname = "e{i}"\naddress = "e{i}.example.com"\nrole = "e"\n'
            f'username = "admin"\npassword = "file:{secret}"\n'
        )
    (tmp_path / "certd.toml").write_text(text)
    cfg = load_config(tmp_path / "certd.toml")
    boxes = {f"e{i}": FakeBox(pki["e"], pki["corp"]) for i in range(10)}
    devices = CountingDevices(boxes, FakeCucm({}, set()), expect=3)
    reading = asyncio.create_task(gather(cfg, devices, {}, {}, 30.0, concurrency=3))
    await asyncio.wait_for(devices.started.wait(), 30)  # the guard only stops a hung test
    for _ in range(50):  # whatever else could start, has
        await asyncio.sleep(0)
    assert len(devices.reading) == 3  # the other seven wait for a slot
    devices.go.set()
    parties, _, _ = await asyncio.wait_for(reading, 30)
    assert devices.most == 3
    assert sorted(parties) == sorted(boxes) and not any(p.unread for p in parties.values())
