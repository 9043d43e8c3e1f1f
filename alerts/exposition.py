"""The text exposition format's label-value escaping, in one place for every /metrics renderer
written by hand (alerts/metrics.py, alerts/trust.py, expressway_certd/deadline_metrics.py).

Prometheus' exposition format: in a label value, backslash, double quote and line feed are
written as `\\`, `\"` and `\n`; nothing else is escaped.
"""

from __future__ import annotations


def label_value(value: str) -> str:
    """`value` escaped for use between the double quotes of a label."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
