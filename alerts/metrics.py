"""Prometheus metrics: a collector that reads the monitor's state at scrape time.

No label set outlives the state it describes: an endpoint removed from the config (and so from
the state) has no series at the next scrape. Counters of things that happen (stage outcomes,
CA requests) live with the code that counts them and are registered beside this collector.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from monitor.config import ExpresswayConfig
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
