"""One label-value escaping for the hand-written /metrics renderers, checked against
prometheus_client (the reference writer and parser of the text format)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from expressway_certd.alerts.exposition import label_value

HOSTILE = ["plain", "back\\slash", 'quo"te', "new\nline", 'all\\"\n', "ünïcode \t tab"]


@pytest.mark.parametrize("raw", HOSTILE)
def test_escaping_is_what_prometheus_client_writes(raw: str) -> None:
    registry = CollectorRegistry()
    Gauge("x", "x", ["v"], registry=registry).labels(raw).set(1)
    written = generate_latest(registry).decode()
    assert f'x{{v="{label_value(raw)}"}} 1.0' in written.splitlines()


@pytest.mark.parametrize("raw", HOSTILE)
def test_the_parser_reads_back_the_raw_value(raw: str) -> None:
    text = f'# TYPE x gauge\nx{{v="{label_value(raw)}"}} 1.0\n'
    (family,) = text_string_to_metric_families(text)
    assert family.samples[0].labels == {"v": raw}
