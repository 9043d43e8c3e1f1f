"""Prometheus metrics every CA connector records: request durations and errors by reason."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

CA_REQUEST_DURATION = Histogram(
    "expressway_ca_request_duration_seconds",
    "Duration of one request to a CA, by CA name, connector kind and operation.",
    ["ca", "kind", "op"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
CA_ERRORS = Counter(
    "expressway_ca_errors_total",
    "Failed CA requests, by CA name, connector kind and reason.",
    ["ca", "kind", "reason"],
)
