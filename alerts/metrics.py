"""Prometheus metrics: a collector that reads the monitor's state at scrape time.

No label set outlives the state it describes: an endpoint removed from the config (and so from
the state) has no series at the next scrape. Counters of things that happen (stage outcomes,
CA requests) live with the code that counts them and are registered beside this collector.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from monitor.config import ExpresswayConfig
from monitor.store import RenewalRow
from monitor.watch import EndpointState, Key

ENDPOINT_LABELS = ["target", "host", "port", "service"]
INFO_LABELS = [*ENDPOINT_LABELS, "cluster", "role", "subject", "issuer", "serial", "sha256", "aki"]


class StateCollector(Collector):
    """Yields the cert and probe families from the current endpoint state."""

    def __init__(
        self,
        states: Callable[[], Mapping[Key, EndpointState]],
        targets: Callable[[], Iterable[ExpresswayConfig]],
        version: str,
    ) -> None:
        self._states = states
        self._targets = targets
        self._version = version

    def describe(self) -> Iterator[Metric]:
        return iter(())  # state-driven: nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        build = GaugeMetricFamily(
            "expressway_certd_build_info",
            "Build of the running expressway-certd.",
            labels=["version"],
        )
        build.add_metric([self._version], 1)
        yield build

        g = GaugeMetricFamily
        not_after = g(
            "expressway_cert_not_after_timestamp_seconds",
            "Expiry of the certificate the endpoint served at the latest successful probe.",
            labels=ENDPOINT_LABELS,
        )
        not_before = g(
            "expressway_cert_not_before_timestamp_seconds",
            "Start of validity of the served certificate.",
            labels=ENDPOINT_LABELS,
        )
        info = g(
            "expressway_cert_info",
            "Identity of the served certificate (always 1).",
            labels=INFO_LABELS,
        )
        eku_ok = g(
            "expressway_cert_eku_ok",
            "1 when the served certificate carries the EKUs its version and role need (FN74362).",
            labels=ENDPOINT_LABELS,
        )
        san_ok = g(
            "expressway_cert_san_ok",
            "1 when the SANs include the probed name and cluster FQDN, without wildcards.",
            labels=ENDPOINT_LABELS,
        )
        chain_ok = g(
            "expressway_cert_chain_ok",
            "1 when the served chain verifies against the configured trust anchors.",
            labels=ENDPOINT_LABELS,
        )
        last_change = g(
            "expressway_cert_last_change_timestamp_seconds",
            "When the endpoint was first seen serving its current certificate.",
            labels=ENDPOINT_LABELS,
        )
        success = g(
            "expressway_probe_success",
            "1 when the latest probe completed a TLS handshake and got a certificate.",
            labels=ENDPOINT_LABELS,
        )
        duration = g(
            "expressway_probe_duration_seconds",
            "Duration of the latest probe: connect, STARTTLS and TLS handshake.",
            labels=ENDPOINT_LABELS,
        )
        last_probe = g(
            "expressway_probe_last_timestamp_seconds",
            "When the endpoint was last probed.",
            labels=ENDPOINT_LABELS,
        )
        targets = {t.name: t for t in self._targets()}
        states = self._states()
        for key, st in states.items():
            exp = targets.get(key[0])
            if exp is None:
                continue  # not configured any more
            ep = st.endpoint
            labels = [st.target, ep.host, str(ep.port), ep.service]
            success.add_metric(labels, 1.0 if st.ok else 0.0)
            duration.add_metric(labels, st.duration)
            last_probe.add_metric(labels, st.observed_at.timestamp())
            facts = st.facts
            if facts is None:
                continue
            not_after.add_metric(labels, facts.not_after.timestamp())
            not_before.add_metric(labels, facts.not_before.timestamp())
            info.add_metric(
                [
                    *labels,
                    exp.cluster or "",
                    exp.role or "",
                    facts.subject,
                    facts.issuer,
                    facts.serial,
                    facts.sha256,
                    facts.aki or "",
                ],
                1.0,
            )
            eku_ok.add_metric(labels, 0.0 if st.eku_problem else 1.0)
            san_ok.add_metric(labels, 0.0 if st.san_problem else 1.0)
            chain_ok.add_metric(labels, 1.0 if st.chain_verified else 0.0)
            if st.last_change_at is not None:
                last_change.add_metric(labels, st.last_change_at.timestamp())
        yield from (
            not_after, not_before, info, eku_ok, san_ok, chain_ok, last_change,
            success, duration, last_probe,
        )  # fmt: skip


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
    ) -> None:
        self._targets = targets
        self._latest = latest
        self._next_due = next_due
        self._last_success = last_success

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
            "The certificate this tool installed on the target last (always 1).",
            labels=["target", "sha256"],
        )
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
                if sha:
                    installed.add_metric([exp.name, sha], 1.0)
            when = row.next_at if row is not None and row.active else due.get(exp.name)
            if when is not None:
                next_ts.add_metric([exp.name], when.timestamp())
            if exp.name in success:
                last_ok.add_metric([exp.name], success[exp.name].timestamp())
        yield from (state, updated, next_ts, last_ok, installed)
