"""Prometheus metrics read from the daemon's state at scrape time, plus stage counters.

No label set outlives the state it describes: an endpoint removed from the config (and so from
the state) has no series at the next scrape. Counters of things that happen (stage outcomes,
CA requests) live with the code that counts them and are registered in the daemon's registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from expressway_certd.alerts.exposition import label_value
from expressway_certd.monitor.backlog import Backlog
from expressway_certd.monitor.clientcert import STATUSES, ClientCertState
from expressway_certd.monitor.config import ExpresswayConfig
from expressway_certd.monitor.facts import CertFacts
from expressway_certd.monitor.policy import Drift
from expressway_certd.monitor.store import RenewalRow
from expressway_certd.monitor.watch import EndpointState, Key

ENDPOINT_LABELS = ["target", "host", "port", "service"]
INFO_LABELS = [*ENDPOINT_LABELS, "cluster", "role", "subject", "issuer", "serial", "sha256", "aki"]


def _labels(names: Iterable[str], values: Iterable[str]) -> str:
    """Label text in name order (as prometheus_client writes it)."""
    pairs = sorted(zip(names, values, strict=True))
    return ",".join(f'{n}="{label_value(v)}"' for n, v in pairs)


def _num(value: float) -> str:
    return repr(float(value))


# (name, help) of the state families, in exposition order.
STATE_FAMILIES = (
    ("expressway_certd_build_info", "Build of the running expressway-certd."),
    (
        "expressway_cert_not_after_timestamp_seconds",
        "Expiry of the certificate the endpoint served at the latest successful probe.",
    ),
    (
        "expressway_cert_not_before_timestamp_seconds",
        "Start of validity of the served certificate.",
    ),
    ("expressway_cert_info", "Identity of the served certificate (always 1)."),
    (
        "expressway_cert_eku_ok",
        "1 when the served certificate carries the EKUs its version and role need (FN74362).",
    ),
    (
        "expressway_cert_san_ok",
        "1 when the SANs include the probed name and cluster FQDN, without wildcards.",
    ),
    (
        "expressway_cert_chain_ok",
        "1 when the served chain verifies against the configured trust anchors.",
    ),
    (
        "expressway_cert_lint_finding",
        "1 for each advisory the endpoint's chain or TLS version draws (finding: see "
        "docs/metrics.md); never a chain failure.",
    ),
    (
        "expressway_cert_last_change_timestamp_seconds",
        "When the endpoint was first seen serving its current certificate.",
    ),
    (
        "expressway_probe_success",
        "1 when the latest probe completed a TLS handshake and got a certificate.",
    ),
    (
        "expressway_probe_duration_seconds",
        "Duration of the latest probe: connect, STARTTLS and TLS handshake.",
    ),
    ("expressway_probe_last_timestamp_seconds", "When the endpoint was last probed."),
    (
        "expressway_client_cert_status",
        "1 for the outcome of the latest API read of the target's X15.5 client certificate "
        "(status: ok, not_applicable, unpublished, error), 0 for the others.",
    ),
    (
        "expressway_client_cert_read_timestamp_seconds",
        "When the target's client certificate was last read through its API.",
    ),
)
# Families with a `cert_kind` label: "server" for what an endpoint serves, "client" for the
# X15.5 client certificate read through the box's API (monitor/clientcert.py).
CERT_KIND_FAMILIES = (
    "expressway_cert_not_after_timestamp_seconds",
    "expressway_cert_not_before_timestamp_seconds",
    "expressway_cert_eku_ok",
)
CLIENT_CERT_SERVICE = "api"  # the `service` label of client certificate series


@dataclass(frozen=True)
class ReplicaView:
    """What a replica (PostgreSQL, monitor/replicas.py) owns, for its two gauges."""

    owned: int  # targets this replica polls and exports
    live: int  # replicas it sees live, itself included


REPLICA_FAMILIES = (
    (
        "expressway_certd_replica_owned_targets",
        "Targets this replica polls and exports (replicas on PostgreSQL only).",
    ),
    (
        "expressway_certd_replica_live",
        "Live replicas this replica saw at its latest heartbeat, itself included.",
    ),
)


class StateExposition:
    """Renders the cert and probe families from the current endpoint state, at scrape time.

    Written straight to the text format: at 10,000 endpoints prometheus_client's family
    objects and per-sample label validation cost over a second of event-loop time; here the
    label text of an endpoint (and of a certificate's info series) is built once and reused.
    """

    def __init__(
        self,
        states: Callable[[], Mapping[Key, EndpointState]],
        targets: Callable[[], Iterable[ExpresswayConfig]],
        version: str,
        *,
        replica: Callable[[], ReplicaView | None] = lambda: None,
        client_certs: Callable[[], Mapping[str, ClientCertState]] = dict,
    ) -> None:
        self._replica = replica
        self._client_certs = client_certs
        self._states = states
        self._targets = targets
        self._version = version
        self._endpoint_labels: dict[tuple[str, str, int, str], str] = {}
        self._info_labels: dict[tuple[str, str, int, str, str, str | None, str | None], str] = {}

    def _endpoint(self, st: EndpointState) -> str:
        ep = st.endpoint
        key = (st.target, ep.host, ep.port, ep.service)
        text = self._endpoint_labels.get(key)
        if text is None:
            text = _labels(ENDPOINT_LABELS, [st.target, ep.host, str(ep.port), ep.service])
            self._endpoint_labels[key] = text
        return text

    def _info(self, st: EndpointState, exp: ExpresswayConfig) -> str:
        facts = st.facts
        assert facts is not None
        ep = st.endpoint
        key = (st.target, ep.host, ep.port, facts.sha256, ep.service, exp.cluster, exp.role)
        text = self._info_labels.get(key)
        if text is None:
            text = _labels(
                INFO_LABELS,
                [st.target, ep.host, str(ep.port), ep.service, exp.cluster or "", exp.role or "",
                 facts.subject, facts.issuer, facts.serial, facts.sha256, facts.aki or ""],
            )  # fmt: skip
            self._info_labels[key] = text
        return text

    def render(self) -> str:
        rows: dict[str, list[str]] = {name: [] for name, _ in STATE_FAMILIES}
        rows["expressway_certd_build_info"].append(
            f'{{version="{label_value(self._version)}"}} 1.0'
        )
        targets = {t.name: t for t in self._targets()}
        live_endpoints: set[tuple[str, str, int, str]] = set()
        live_info: set[tuple[str, str, int, str, str, str | None, str | None]] = set()
        for key, st in self._states().items():
            exp = targets.get(key[0])
            if exp is None:
                continue  # not configured any more
            labels = self._endpoint(st)
            ep = st.endpoint
            live_endpoints.add((st.target, ep.host, ep.port, ep.service))
            rows["expressway_probe_success"].append(f"{{{labels}}} {1.0 if st.ok else 0.0}")
            rows["expressway_probe_duration_seconds"].append(f"{{{labels}}} {_num(st.duration)}")
            rows["expressway_probe_last_timestamp_seconds"].append(
                f"{{{labels}}} {_num(st.observed_at.timestamp())}"
            )
            facts = st.facts
            if facts is None:
                continue
            live_info.add(
                (st.target, ep.host, ep.port, facts.sha256, ep.service, exp.cluster, exp.role)
            )
            _kind_rows(rows, f'cert_kind="server",{labels}', facts, eku_ok=not st.eku_problem)
            rows["expressway_cert_info"].append(f"{{{self._info(st, exp)}}} 1.0")
            rows["expressway_cert_san_ok"].append(f"{{{labels}}} {0.0 if st.san_problem else 1.0}")
            rows["expressway_cert_chain_ok"].append(
                f"{{{labels}}} {1.0 if st.chain_verified else 0.0}"
            )
            for finding in sorted({f.finding for f in st.lint}):
                rows["expressway_cert_lint_finding"].append(
                    f'{{{labels},finding="{label_value(finding)}"}} 1.0'
                )
            if st.last_change_at is not None:
                rows["expressway_cert_last_change_timestamp_seconds"].append(
                    f"{{{labels}}} {_num(st.last_change_at.timestamp())}"
                )
        for name, cc in sorted(self._client_certs().items()):
            if name in targets:
                _client_rows(rows, cc)
        # forget label text of endpoints and certificates that are gone
        if len(self._endpoint_labels) > len(live_endpoints):
            self._endpoint_labels = {
                k: v for k, v in self._endpoint_labels.items() if k in live_endpoints
            }
        if len(self._info_labels) > len(live_info):
            self._info_labels = {k: v for k, v in self._info_labels.items() if k in live_info}
        out: list[str] = []
        for name, help_text in STATE_FAMILIES:
            out.append(f"# HELP {name} {help_text}\n# TYPE {name} gauge\n")
            out.extend(f"{name}{row}\n" for row in rows[name])
        view = self._replica()
        if view is not None:
            for (name, help_text), value in zip(
                REPLICA_FAMILIES, (view.owned, view.live), strict=True
            ):
                out.append(
                    f"# HELP {name} {help_text}\n# TYPE {name} gauge\n{name} {_num(value)}\n"
                )
        return "".join(out)


def _client_rows(rows: dict[str, list[str]], cc: ClientCertState) -> None:
    """The series of one target's client certificate: its status always, its expiry and EKU
    verdict while a certificate is known (kept over failed reads, as for a failing probe)."""
    labels = _labels(ENDPOINT_LABELS, [cc.target, cc.host, str(cc.port), CLIENT_CERT_SERVICE])
    target = f'target="{label_value(cc.target)}"'
    for status in STATUSES:
        rows["expressway_client_cert_status"].append(
            f'{{status="{status}",{target}}} {1.0 if status == cc.status else 0.0}'
        )
    rows["expressway_client_cert_read_timestamp_seconds"].append(
        f"{{{target}}} {_num(cc.read_at.timestamp())}"
    )
    facts = cc.facts
    if facts is None:
        return
    _kind_rows(rows, f'cert_kind="client",{labels}', facts, eku_ok=not cc.eku_problem)


def _kind_rows(rows: dict[str, list[str]], labels: str, facts: CertFacts, *, eku_ok: bool) -> None:
    """The series a certificate has whichever kind it is (`labels` carry its cert_kind)."""
    rows["expressway_cert_not_after_timestamp_seconds"].append(
        f"{{{labels}}} {_num(facts.not_after.timestamp())}"
    )
    rows["expressway_cert_not_before_timestamp_seconds"].append(
        f"{{{labels}}} {_num(facts.not_before.timestamp())}"
    )
    rows["expressway_cert_eku_ok"].append(f"{{{labels}}} {1.0 if eku_ok else 0.0}")


# ---- renewals -------------------------------------------------------------------------------

RENEWAL_STATES = ("idle", "running", "waiting", "awaiting_approval", "failed", "blocked", "done")

RENEWAL_STAGE_TOTAL = Counter(
    "expressway_renewal_stage_total",
    "Renewal stage runs by outcome (advance, wait, blocked, failed).",
    ["target", "stage", "result"],
    registry=None,
)
RENEWAL_STAGE_DURATION = Histogram(
    "expressway_renewal_stage_duration_seconds",
    "How long one run of a renewal stage took.",
    ["stage"],
    buckets=(0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
    registry=None,
)


def observe_stage(target: str, stage: str, result: str, seconds: float) -> None:
    RENEWAL_STAGE_TOTAL.labels(target, stage, result).inc()
    RENEWAL_STAGE_DURATION.labels(stage).observe(seconds)


def renewal_state(row: RenewalRow | None) -> str:
    if row is None:
        return "idle"
    if row.status == "waiting" and row.stage == "approve":
        return "awaiting_approval"
    return row.status if row.status in RENEWAL_STATES else "idle"


class RenewalCollector(Collector):
    """The renewal state families, from the manager's view of every renewable target."""

    def __init__(
        self,
        targets: Callable[[], Iterable[ExpresswayConfig]],
        latest: Callable[[], Mapping[str, RenewalRow]],
        next_due: Callable[[], Mapping[str, datetime | None]],
        last_success: Callable[[], Mapping[str, datetime]],
        drift: Callable[[], Mapping[tuple[str, str], Drift]] = dict,
    ) -> None:
        self._targets = targets
        self._latest = latest
        self._next_due = next_due
        self._last_success = last_success
        self._drift = drift  # (target, endpoint) -> what it serves instead

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "expressway_renewal_state",
            "1 for the current renewal state of a target (stage: the stage it is at).",
            labels=["target", "state", "stage"],
        )
        updated = GaugeMetricFamily(
            "expressway_renewal_updated_timestamp_seconds",
            "When the target's latest renewal last changed state.",
            labels=["target"],
        )
        next_ts = GaugeMetricFamily(
            "expressway_renewal_next_timestamp_seconds",
            "When the next renewal step (or, when idle, the next renewal) is due.",
            labels=["target"],
        )
        last_ok = GaugeMetricFamily(
            "expressway_renewal_last_success_timestamp_seconds",
            "When a renewal of the target last completed.",
            labels=["target"],
        )
        installed = GaugeMetricFamily(
            "expressway_renewal_installed_info",
            "The server certificate this tool installed on the target last (always 1).",
            labels=["target", "sha256"],
        )
        mismatch = GaugeMetricFamily(
            "expressway_served_cert_mismatch",
            "1 while an endpoint serves another certificate than the one the box reports "
            "installed through its API (verified: whether the served chain verifies).",
            labels=["target", "endpoint", "served_sha256", "installed_sha256", "verified"],
        )
        for (target, endpoint), d in sorted(self._drift().items()):
            mismatch.add_metric(
                [target, endpoint, d.served_sha256, d.installed_sha256,
                 "true" if d.served_verified else "false"],
                1.0,
            )  # fmt: skip
        latest, due, success = self._latest(), self._next_due(), self._last_success()
        for exp in self._targets():
            if exp.renewal is None:
                continue
            row = latest.get(exp.name)
            current = renewal_state(row)
            if row is not None and current == "done":
                current = "idle"
            for name in RENEWAL_STATES:
                stage = row.stage if row is not None and row.active else ""
                state.add_metric(
                    [exp.name, name, stage if name == current else ""],
                    1.0 if name == current else 0.0,
                )
            if row is not None:
                updated.add_metric([exp.name], row.updated_at.timestamp())
                sha = row.data.get("installed_sha256")
                # the served (server) certificate only: a client certificate renewal installs
                # what no endpoint serves, which would read as a pending restart
                if sha and row.kind == "server":
                    installed.add_metric([exp.name, sha], 1.0)
            when = row.next_at if row is not None and row.active else due.get(exp.name)
            if when is not None:
                next_ts.add_metric([exp.name], when.timestamp())
            if exp.name in success:
                last_ok.add_metric([exp.name], success[exp.name].timestamp())
        yield from (state, updated, next_ts, last_ok, installed, mismatch)


class BacklogCollector(Collector):
    """expressway_renewal_backlog* per CA (monitor/backlog.py), from the latest renewal check."""

    def __init__(self, backlog: Callable[[], Mapping[str, Backlog]]) -> None:
        self._backlog = backlog

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        waiting = GaugeMetricFamily(
            "expressway_renewal_backlog",
            "Renewals of targets signed by this CA that have not placed their CA order yet.",
            labels=["ca"],
        )
        clears = GaugeMetricFamily(
            "expressway_renewal_backlog_clear_timestamp_seconds",
            "When the CA's orders_per_hour lets the last renewal of the backlog through.",
            labels=["ca"],
        )
        expiry = GaugeMetricFamily(
            "expressway_renewal_backlog_earliest_expiry_timestamp_seconds",
            "The earliest certificate expiry among the targets in the backlog.",
            labels=["ca"],
        )
        for ca, b in sorted(self._backlog().items()):
            waiting.add_metric([ca], b.waiting)
            clears.add_metric([ca], b.clears_at.timestamp())
            if b.earliest_expiry is not None:
                expiry.add_metric([ca], b.earliest_expiry.timestamp())
        yield waiting
        yield clears
        yield expiry
