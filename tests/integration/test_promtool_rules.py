"""Alert rules, their promtool unit tests, the example Prometheus config and the dashboard.

promtool (Debian package `prometheus`) checks and unit-tests the rules, breaks them on purpose
to show the unit tests notice, and evaluates every dashboard query against a healthy fleet.
The pure tests check names, labels, annotations, runbook anchors and dashboard structure
without it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROM_DIR = ROOT / "deploy" / "prometheus"
RULES = PROM_DIR / "expressway-certd.rules.yml"
RULE_TESTS = sorted((PROM_DIR / "tests").glob("*.yml"))
EXAMPLE_CONFIG = PROM_DIR / "prometheus.example.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "expressway-certd.json"
ALERTS_DOC = ROOT / "docs" / "alerts.md"

# The daemon's metric interface (alerts/metrics.py): rules and dashboard may use these only,
# so renaming a metric on either side breaks this test.
DAEMON_METRICS = frozenset(
    {
        "expressway_cert_not_after_timestamp_seconds",
        "expressway_cert_not_before_timestamp_seconds",
        "expressway_cert_info",
        "expressway_cert_eku_ok",
        "expressway_cert_san_ok",
        "expressway_cert_chain_ok",
        "expressway_cert_lint_finding",
        "expressway_probe_success",
        "expressway_probe_duration_seconds",
        "expressway_cert_last_change_timestamp_seconds",
        "expressway_certd_build_info",
        # X15.5 client certificate read through the API (renewers/clientcert.py)
        "expressway_client_cert_status",
        "expressway_client_cert_read_timestamp_seconds",
        # renewals: only for targets with `renewal = { ca = "..." }`
        "expressway_renewal_state",
        "expressway_renewal_updated_timestamp_seconds",
        "expressway_renewal_next_timestamp_seconds",
        "expressway_renewal_last_success_timestamp_seconds",
        "expressway_renewal_installed_info",
        "expressway_served_cert_mismatch",
        "expressway_renewal_stage_total",
        "expressway_renewal_stage_duration_seconds_bucket",
        "expressway_renewal_stage_duration_seconds_sum",
        "expressway_renewal_stage_duration_seconds_count",
        "expressway_ca_request_duration_seconds_bucket",
        "expressway_ca_request_duration_seconds_sum",
        "expressway_ca_request_duration_seconds_count",
        "expressway_ca_errors_total",
        # deadline risk: targets with a renewal (expressway_certd/deadline_metrics.py)
        "expressway_renewal_deadline_margin_seconds",
        # the fleet's backlog per CA (monitor/backlog.py)
        "expressway_renewal_backlog",
        "expressway_renewal_backlog_clear_timestamp_seconds",
        "expressway_renewal_backlog_earliest_expiry_timestamp_seconds",
        # trust map: from the latest `trust-map` run (alerts/trust.py)
        "expressway_trust_relation_ok",
        "expressway_trust_relation_break_timestamp_seconds",
        "expressway_trust_map_generated_timestamp_seconds",
    }
)
# Daemon metrics without a `target` label: dashboard panels show them for all targets.
METRICS_WITHOUT_TARGET = frozenset(
    {
        "expressway_certd_build_info",
        "expressway_renewal_stage_duration_seconds_bucket",
        "expressway_renewal_stage_duration_seconds_sum",
        "expressway_renewal_stage_duration_seconds_count",
        "expressway_ca_request_duration_seconds_bucket",
        "expressway_ca_request_duration_seconds_sum",
        "expressway_ca_request_duration_seconds_count",
        "expressway_ca_errors_total",
        "expressway_trust_relation_ok",
        "expressway_trust_relation_break_timestamp_seconds",
        "expressway_trust_map_generated_timestamp_seconds",
        "expressway_renewal_backlog",
        "expressway_renewal_backlog_clear_timestamp_seconds",
        "expressway_renewal_backlog_earliest_expiry_timestamp_seconds",
    }
)
PROMETHEUS_METRICS = frozenset({"up"})
ENDPOINT_LABELS = ("target", "host", "port", "service")

# alert -> (severity, `for`, labels its description must name); "a/b": a label template that
# gives one or the other (the promtool tests check which one when)
ALERTS: dict[str, tuple[str, str | None, tuple[str, ...]]] = {
    "ExpresswayCertExpiringSoon": ("warning", "1h", ENDPOINT_LABELS),
    "ExpresswayCertExpiringCritical": ("critical", None, ENDPOINT_LABELS),
    "ExpresswayCertExpired": ("critical", None, ENDPOINT_LABELS),
    "ExpresswayProbeFailing": ("warning", "10m", ENDPOINT_LABELS),
    "ExpresswayClientCertUnread": ("warning", "2h", ("target", "status")),
    "ExpresswayCertdAbsent": ("critical", "5m", ("job", "instance")),
    "ExpresswayChainNotVerified": ("warning", "15m", ENDPOINT_LABELS),
    "ExpresswayCertSANNotOK": ("warning", "15m", ENDPOINT_LABELS),
    "ExpresswayCertEKUNotOK": ("warning", "15m", ENDPOINT_LABELS),
    "ExpresswayCertLintFinding": ("info", "1h", (*ENDPOINT_LABELS, "finding")),
    "ExpresswayClusterPeersDifferentCA": ("warning", "30m", ("cluster", "target", "host", "aki")),
    "ExpresswayEndpointsServeDifferentCerts": ("warning", "30m", (*ENDPOINT_LABELS, "sha256")),
    "ExpresswayRenewalFailed": ("warning/critical", "5m", ("target", "stage")),
    "ExpresswayRenewalStuck": ("warning", "15m", ("target", "state", "stage")),
    "ExpresswayRenewalAwaitingApproval": ("warning", "15m", ("target", "stage")),
    "ExpresswayRestartPending": ("warning", "1h", ("target", "sha256")),
    "ExpresswayUnifiedCMRestartPending": ("info", "15m", ("target",)),
    "ExpresswayCAErrors": ("warning", None, ("ca", "kind", "reason")),
    "ExpresswayServedCertDiffersFromInstalled": (
        "critical",
        "10m",
        ("target", "endpoint", "served_sha256", "installed_sha256", "verified"),
    ),
    "ExpresswayTrustRelationBroken": ("critical", "15m", ("from", "to", "relation")),
    "ExpresswayTrustRelationWillBreak": ("warning", None, ("from", "to", "relation")),
    "ExpresswayRenewalDeadlineAtRisk": ("warning", "15m", ("target", "dominating")),
    "ExpresswayRenewalBacklogTooSlow": ("critical", "15m", ("ca",)),
}

CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if CI:
            pytest.fail("promtool not found; CI must install the Debian package 'prometheus'")
        pytest.skip("promtool not found (Debian package 'prometheus')")
    return path


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=60, cwd=cwd, check=False
    )


# --- reading the rules file without a YAML library -------------------------------------------


def rule_blocks(text: str) -> dict[str, str]:
    """Rule name (alert or record) -> the YAML text of that rule."""
    starts = list(re.finditer(r"^\s*- (?:alert|record): *(\S+)\s*$", text, re.M))
    ends = [m.start() for m in starts[1:]] + [len(text)]
    return {m.group(1): text[m.start() : end] for m, end in zip(starts, ends, strict=True)}


def scalar(block: str, key: str) -> str | None:
    """The value of `key` in a rule block: plain, quoted, or a `|` / `>` block scalar."""
    lines = block.splitlines()
    for i, line in enumerate(lines):
        m = re.match(rf"^(\s*){re.escape(key)}: *(.*)$", line)
        if m is None:
            continue
        indent, value = len(m.group(1)), m.group(2).strip()
        if value[:1] not in ("|", ">"):
            return value.strip("'\"")
        body = []
        for nxt in lines[i + 1 :]:
            if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
                break
            body.append(nxt.strip())
        sep = "\n" if value.startswith("|") else " "
        return sep.join(b for b in body if b)
    return None


def rule_exprs() -> dict[str, str]:
    blocks = rule_blocks(RULES.read_text())
    exprs = {name: scalar(block, "expr") for name, block in blocks.items()}
    missing = [name for name, expr in exprs.items() if not expr]
    assert not missing, f"rules without expr: {missing}"
    return {name: expr for name, expr in exprs.items() if expr}


# --- metric names in PromQL ------------------------------------------------------------------

PROMQL_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
    | {"group_left", "group_right", "inf", "nan", "atan2", "start", "end"}
)


def promql_metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (functions, keywords and labels left out)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # ranges and subqueries
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.$])[a-zA-Z_:][\w:]*", s):
        if re.match(r"\s*\(", s[m.end() :]) or m.group(0).lower() in PROMQL_KEYWORDS:
            continue  # a function or aggregation, or a keyword
        names.add(m.group(0))
    return names


def test_metric_name_extractor() -> None:
    expr = (
        'sum by (target) (rate(foo_total{a="b",c=~"$x"}[5m])) / on (x) group_left (y) '
        'bar:ratio offset 5m > bool 1e3 or label_replace(baz, "d", "$1", "s", "(.*)") '
        'unless absent(qux{job="j"}) and topk(5, -quux) < 30 * 86400'
    )
    assert promql_metric_names(expr) == {"foo_total", "bar:ratio", "baz", "qux", "quux"}
    assert promql_metric_names("vector(1) unless on () count(up == 0)") == {"up"}


# --- the dashboard ---------------------------------------------------------------------------


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())  # type: ignore[no-any-return]


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from all_panels(p.get("panels", []))  # collapsed rows nest their panels


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, expr) for every panel target, and `label_values` variables as a selector."""
    dash = load_dashboard()
    queries = [
        (f"panel {p['id']} {p.get('title')!r} {t.get('refId')}", t["expr"])
        for p in all_panels(dash["panels"])
        if p.get("type") != "row"
        for t in p.get("targets", [])
    ]
    for var in dash["templating"]["list"]:
        if var.get("type") != "query":
            continue
        q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = re.fullmatch(r"\s*label_values\(\s*(.+?)\s*,\s*(\w+)\s*\)\s*", q)
        assert m, f"variable {var['name']}: expected label_values(metric, label), got {q!r}"
        queries.append((f"variable {var['name']}", f"group by ({m.group(2)}) ({m.group(1)})"))
    return queries


def test_dashboard_panels_have_datasource_and_queries() -> None:
    dash = load_dashboard()
    assert 36 <= dash["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    ds_var = variables["DS_PROMETHEUS"]
    assert (ds_var["type"], ds_var["query"]) == ("datasource", "prometheus")
    target = variables["target"]
    q = target["query"]["query"] if isinstance(target["query"], dict) else target["query"]
    assert re.sub(r"\s", "", q) == "label_values(expressway_cert_info,target)"
    assert target["multi"] and target["includeAll"] and target["allValue"] == ".*"
    assert target["datasource"]["uid"] == "${DS_PROMETHEUS}"

    panels = [p for p in all_panels(dash["panels"]) if p.get("type") != "row"]
    assert len(panels) >= 7
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels:
        where = f"panel {p['id']} {p.get('title')!r}"
        assert p.get("datasource", {}).get("uid") == "${DS_PROMETHEUS}", where
        assert p.get("targets"), f"{where}: no queries"
        refs = [t.get("refId") for t in p["targets"]]
        assert all(refs) and len(refs) == len(set(refs)), f"{where}: refIds {refs}"
        for t in p["targets"]:
            assert t.get("datasource", {}).get("uid") == "${DS_PROMETHEUS}", where
            assert t.get("expr", "").strip(), f"{where} {t.get('refId')}: empty expr"


def test_dashboard_queries_filter_by_target() -> None:
    for where, expr in dashboard_queries():
        if where.startswith("variable"):
            continue
        names = promql_metric_names(expr)
        assert names, f"{where}: selects no metric: {expr}"
        for m in re.finditer(r"\b(expressway_\w+)(\{[^}]*\})?", expr):
            if m.group(1) in METRICS_WITHOUT_TARGET:
                continue
            assert m.group(2) and 'target=~"$target"' in m.group(2), (
                f'{where}: {m.group(1)} must be selected with target=~"$target": {expr}'
            )


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_only_daemon_metric_names_are_used(source: str) -> None:
    queries = list(rule_exprs().items()) if source == "rules" else dashboard_queries()
    used: set[str] = set()
    for where, expr in queries:
        names = promql_metric_names(expr)
        unknown = names - DAEMON_METRICS - PROMETHEUS_METRICS
        assert not unknown, f"{source}, {where}: unknown metric names {sorted(unknown)}: {expr}"
        used |= names
    assert used & DAEMON_METRICS, f"{source} uses none of the daemon's metrics"


# --- rule structure and runbooks -------------------------------------------------------------


def markdown_anchors(text: str) -> set[str]:
    """GitHub-style anchors of the headings of a Markdown document."""
    anchors = set()
    for m in re.finditer(r"^#{1,6} +(.+?) *$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_alerts_have_severity_annotations_and_runbook() -> None:
    blocks = rule_blocks(RULES.read_text())
    alerts = {name: b for name, b in blocks.items() if re.search(r"- alert:", b)}
    assert set(alerts) == set(ALERTS)
    anchors = markdown_anchors(ALERTS_DOC.read_text())
    for name, block in alerts.items():
        severity, for_, named = ALERTS[name]
        if "/" in severity:
            template = scalar(block, "severity") or ""
            assert "{{" in template, f"{name}: severity {template!r} is no template"
            assert all(s in template for s in severity.split("/")), f"{name}: {template!r}"
        else:
            assert scalar(block, "severity") == severity, name
        assert scalar(block, "for") == for_, name
        assert scalar(block, "summary"), f"{name}: no summary"
        description = scalar(block, "description") or ""
        for label in named:
            assert f"$labels.{label}" in description, f"{name}: description lacks {label}"
        runbook = scalar(block, "runbook") or ""
        assert runbook == f"docs/alerts.md#{name.lower()}", f"{name}: runbook {runbook!r}"
        assert name.lower() in anchors, f"docs/alerts.md has no section for {name}"


def test_alerts_doc_sections_are_complete() -> None:
    sections = re.split(r"^## ", ALERTS_DOC.read_text(), flags=re.M)[1:]
    by_name = {s.split("\n", 1)[0].strip(): s for s in sections}
    assert set(ALERTS) <= set(by_name)
    for name in ALERTS:
        for part in ("**What it means.**", "**Likely causes.**", "**What to do.**"):
            assert part in by_name[name], f"docs/alerts.md, {name}: missing {part}"


ALERT_CASE = re.compile(
    r"^(?P<i> *)- eval_time: *\S+ *\n(?P=i)  alertname: *(?P<name>\w+) *\n"
    r"(?P<firing>(?P=i)  exp_alerts: *\n(?P=i)    - )?",
    re.M,
)


def test_every_alert_has_firing_and_silent_cases() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for path in RULE_TESTS:
        text = path.read_text()
        cases = list(ALERT_CASE.finditer(text))
        assert len(cases) == text.count("alertname:"), (
            f"{path.name}: write alert_rule_test entries as eval_time, alertname, exp_alerts"
        )
        for case in cases:
            (firing if case.group("firing") else silent).add(case.group("name"))
    assert set(ALERTS) <= firing, f"no firing case for {sorted(set(ALERTS) - firing)}"
    assert set(ALERTS) <= silent, f"no silent case for {sorted(set(ALERTS) - silent)}"
    assert firing | silent <= set(ALERTS), f"tests for unknown alerts: {firing | silent}"


# --- promtool --------------------------------------------------------------------------------


@pytest.mark.integration
def test_promtool_check_rules(promtool: str) -> None:
    out = run(promtool, "check", "rules", "--lint=all", "--lint-fatal", RULES)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(rule_blocks(RULES.read_text()))} rules found" in out.stdout


@pytest.mark.integration
@pytest.mark.parametrize("test_file", RULE_TESTS, ids=lambda p: p.name)
def test_promtool_rule_unit_tests(promtool: str, test_file: Path) -> None:
    out = run(promtool, "test", "rules", test_file)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


@pytest.mark.integration
def test_promtool_check_example_config(promtool: str, tmp_path: Path) -> None:
    rule_files = re.findall(r"^rule_files:\n((?:\s+- .+\n)+)", EXAMPLE_CONFIG.read_text(), re.M)
    assert rule_files and "- expressway-certd.rules.yml" in rule_files[0]
    text = EXAMPLE_CONFIG.read_text()
    assert re.search(r"- job_name: expressway-certd\n", text)
    assert '"127.0.0.1:9464"' in text
    # From another directory: the rule file path must resolve relative to the config file.
    out = run(promtool, "check", "config", EXAMPLE_CONFIG, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 1 rule files found" in out.stdout
    assert f"SUCCESS: {len(rule_blocks(RULES.read_text()))} rules found" in out.stdout


# Each mutation breaks one rule the way a careless edit would; the unit tests must notice.
# (old, new, which occurrence; -1: all of them)
MUTATIONS = [
    ("< 30 * 86400", "< 31 * 86400", 0),
    ("< 30 * 86400", "<= 30 * 86400", 0),
    (">= 7 * 86400", "> 7 * 86400", 0),
    ("< 7 * 86400 >= 0", "<= 7 * 86400 >= 0", 0),
    ("< 7 * 86400 >= 0", "< 7 * 86400 > 0", 0),
    (
        "expressway_cert_not_after_timestamp_seconds[5m]))) > 0",
        "expressway_cert_not_after_timestamp_seconds[5m]))) >= 0",
        0,
    ),
    ("for: 1h", "for: 59m", 0),
    ("for: 10m", "for: 9m", 0),
    ("for: 5m", "for: 4m", 0),
    ("for: 15m", "for: 14m", 0),
    ("for: 15m", "for: 14m", 1),
    ("for: 15m", "for: 14m", 2),
    ("for: 30m", "for: 20m", 0),
    ("for: 30m", "for: 20m", 1),
    ("or on (job)", "or", 0),
    ("expressway_cert_chain_ok[5m])) == 0", "expressway_cert_san_ok[5m])) == 0", 0),
    ("expressway_cert_san_ok[5m])) == 0", "expressway_cert_eku_ok[5m])) == 0", 0),
    ("expressway_cert_eku_ok[5m])) == 0", "expressway_cert_chain_ok[5m])) == 0", 0),
    ("expressway_probe_success[5m])) == 0", "expressway_probe_success[5m])) == 1", 0),
    ('expressway_cert_info{cluster!=""}', "expressway_cert_info", -1),
    ("group by (cluster, aki)", "group by (cluster, target, aki)", 0),
    ("group by (target, sha256)", "group by (target, port, sha256)", 0),
    ("          )) > 1)", "          )) > 0)", 1),
    ("severity: critical", "severity: warning", 0),
    ("runbook: docs/alerts.md#expresswaycertexpired", "runbook: docs/alerts.md#expired", 0),
    # renewals
    ('state=~"failed|blocked"}', 'state=~"failed"}', -1),
    ('state=~"failed|blocked"}[5m]))) == 1', 'state=~"failed|blocked"}[5m]))) >= 0', 0),
    ('eq $labels.state "blocked" }}critical', 'eq $labels.state "failed" }}critical', 0),
    ("for: 5m", "for: 4m", 1),
    ("> 6 * 3600", "> 7 * 3600", 0),
    ("> time() - 3600", "> time()", 0),
    ('state=~"running|waiting"}', 'state=~"running|waiting|awaiting_approval"}', 0),
    ("group_right ()", "group_right (state)", 0),
    ("for: 15m", "for: 14m", 3),
    ('state="awaiting_approval"}', 'state=~"awaiting_approval|running"}', 0),
    ("for: 15m", "for: 14m", 4),
    ("unless on (job, target, sha256)", "unless on (job, target)", 0),
    (
        "group by (job, target) (\n            expressway_cert_info or",
        "group by (job, target) (\n            expressway_renewal_installed_info or",
        0,
    ),
    ('stage="restart"}', 'stage="verify"}', -1),
    (
        "expressway_renewal_next_timestamp_seconds[5m]))) > time()\n",
        "expressway_renewal_next_timestamp_seconds[5m]))) >= time()\n",
        0,
    ),
    ("for: 1h", "for: 59m", 1),
    ("unless expressway_ca_errors_total offset 15m", "unless expressway_ca_errors_total", 0),
    ("(up offset 15m)", "(up)", 0),
    ("increase(expressway_ca_errors_total[15m])", "increase(expressway_ca_errors_total[5m])", 0),
    ("[15m])\n          ) > 0", "[15m])\n          ) > 1", 0),
    ("          expressway_probe_success)) == 1", "          expressway_probe_success)) == 0", 1),
    # replicas: the hold-over through an owner change (replicas.yml), and only through one
    *(
        (f"last_over_time({series}[5m])", f"last_over_time({series}[30s])", occurrence)
        for series, occurrence in (
            ('expressway_renewal_state{state=~"failed|blocked"}', 0),
            ('expressway_renewal_state{state=~"running|waiting"}', 0),
            ("expressway_renewal_updated_timestamp_seconds", 0),
            ('expressway_renewal_state{state="awaiting_approval"}', 0),
            ("expressway_renewal_installed_info", 0),
            ("expressway_served_cert_mismatch", 0),
            ("expressway_cert_lint_finding", 0),
            ("expressway_renewal_deadline_margin_seconds", 0),
            ('expressway_cert_info{cluster!=""}', 0),
            ("expressway_cert_info", 0),
        )
    ),
    # the backlog alert
    ("for: 15m", "for: 14m", 7),
    (
        "clear_timestamp_seconds)\n            > on (job, ca)",
        "clear_timestamp_seconds)\n            < on (job, ca)",
        0,
    ),
    (
        "max without (instance, pod) (expressway_renewal_backlog_clear_timestamp_seconds)",
        "expressway_renewal_backlog_clear_timestamp_seconds",
        0,
    ),
    (
        "unless on (job, target)\n          expressway_probe_success",
        "unless on (job, target)\n          up",
        2,  # ExpresswayServedCertDiffersFromInstalled: an ended mismatch is not held over
    ),
    (
        "max without (instance, pod) (expressway_trust_relation_ok) == 0",
        "expressway_trust_relation_ok == 0",
        0,
    ),
    ("for: 10m", "for: 9m", 1),
]


def mutate(text: str, old: str, new: str, occurrence: int) -> str:
    starts = [m.start() for m in re.finditer(re.escape(old), text)]
    assert len(starts) > max(occurrence, 0), f"mutation target {old!r} not in the rules"
    if occurrence == -1:
        return text.replace(old, new)
    at = starts[occurrence]
    return text[:at] + new + text[at + len(old) :]


@pytest.mark.integration
@pytest.mark.parametrize(("old", "new", "occurrence"), MUTATIONS)
def test_rule_unit_tests_catch_broken_rules(
    promtool: str, tmp_path: Path, old: str, new: str, occurrence: int
) -> None:
    text = RULES.read_text()
    mutated = mutate(text, old, new, occurrence)
    (tmp_path / RULES.name).write_text(mutated)
    shutil.copytree(PROM_DIR / "tests", tmp_path / "tests")
    check = run(promtool, "check", "rules", tmp_path / RULES.name)
    assert check.returncode == 0, f"mutation must stay valid PromQL: {check.stderr}"
    # Every test file is run until one fails (promtool takes seconds per file): first the files
    # that name the mutated rules most often (healthy_fleet.yml names every alert once, to see
    # it silent, and rarely catches a mutation), then the rest. The verdict is the same as
    # running them all.
    changed = {n for n, b in rule_blocks(text).items() if rule_blocks(mutated).get(n) != b}
    files = sorted((tmp_path / "tests").glob("*.yml"))
    files.sort(key=lambda f: -sum(f.read_text().count(name) for name in changed))
    caught = next((f for f in files if run(promtool, "test", "rules", f).returncode != 0), None)
    assert caught is not None, f"unit tests pass with {old!r} -> {new!r} (#{occurrence})"


# --- dashboard queries against a healthy fleet -----------------------------------------------


RENEWAL_STATES = ("idle", "running", "waiting", "awaiting_approval", "failed", "blocked", "done")
STAGES = ("snapshot", "preflight", "csr", "submit", "issued", "validate", "trust", "approve")
STAGES += ("install", "restart", "verify")


def histogram(name: str, labels: str, seconds: float, count: int) -> list[tuple[str, str]]:
    """The series of a histogram holding `count` observations of `seconds` (le as exported)."""
    buckets = ("0.05", "0.1", "0.5", "1.0", "2.5", "5.0", "10.0", "30.0", "60.0", "300.0", "+Inf")
    series = [
        (f'{name}_bucket{{{labels},le="{le}"}}', str(count if seconds <= float(le) else 0))
        for le in buckets
    ]
    return [
        *series,
        (f"{name}_count{{{labels}}}", str(count)),
        (f"{name}_sum{{{labels}}}", str(seconds * count)),
    ]


def healthy_fleet_series() -> list[dict[str, str]]:
    """What a running daemon exports for three healthy Expressways (values held for 90m): every
    node was renewed by this daemon process 30 days ago; no CA request failed."""
    job = 'job="expressway-certd",instance="127.0.0.1:9464"'
    nodes = [
        ("expe-c1", "expc1.example.com", "expc.example.com", "c", "c1c1", ("443", "5061")),
        ("expe-c2", "expc2.example.com", "expc.example.com", "c", "c2c2", ("443", "5061")),
        ("expe-e1", "expe1.example.com", "", "e", "e1e1", ("443", "5061", "7001", "8443")),
    ]
    service = {"443": "https", "5061": "sip-tls", "7001": "traversal", "8443": "mra"}
    series = [(f"up{{{job}}}", "1"), (f'expressway_certd_build_info{{{job},version="0.1.0"}}', "1")]
    for target, host, cluster, role, sha, ports in nodes:
        for port in ports:
            ep = f'{job},target="{target}",host="{host}",port="{port}",service="{service[port]}"'
            info = (
                f'cluster="{cluster}",role="{role}",subject="CN={host}",issuer="CN=Corp CA",'
                f'serial="01",sha256="{sha}",aki="11:aa"'
            )
            series += [
                (f"expressway_cert_info{{{ep},{info}}}", "1"),
                (
                    f'expressway_cert_not_after_timestamp_seconds{{{ep},cert_kind="server"}}',
                    str(90 * 86400),
                ),
                (
                    f'expressway_cert_not_before_timestamp_seconds{{{ep},cert_kind="server"}}',
                    str(-86400),
                ),
                (f"expressway_cert_last_change_timestamp_seconds{{{ep}}}", str(-86400)),
                (f'expressway_cert_eku_ok{{{ep},cert_kind="server"}}', "1"),
                (f"expressway_cert_san_ok{{{ep}}}", "1"),
                (f"expressway_cert_chain_ok{{{ep}}}", "1"),
                (f"expressway_probe_success{{{ep}}}", "1"),
                (f"expressway_probe_duration_seconds{{{ep}}}", "0.05"),
            ]
        tg = f'{job},target="{target}"'
        series += [
            (
                f'expressway_renewal_state{{{tg},state="{state}",stage=""}}',
                str(int(state == "idle")),
            )
            for state in RENEWAL_STATES
        ]
        series += [
            (f"expressway_renewal_updated_timestamp_seconds{{{tg}}}", str(-30 * 86400)),
            (f"expressway_renewal_last_success_timestamp_seconds{{{tg}}}", str(-30 * 86400)),
            (f"expressway_renewal_next_timestamp_seconds{{{tg}}}", str(60 * 86400)),
            (f'expressway_renewal_installed_info{{{tg},sha256="{sha}"}}', "1"),
        ]
        series += [
            (f'expressway_renewal_stage_total{{{tg},stage="{stage}",result="advance"}}', "1")
            for stage in STAGES
        ]
        series.append((f'expressway_renewal_stage_total{{{tg},stage="issued",result="wait"}}', "2"))
    for stage in STAGES:
        duration = 90.0 if stage == "restart" else 0.3
        series += histogram(
            "expressway_renewal_stage_duration_seconds", f'{job},stage="{stage}"', duration, 3
        )
    for op in ("cacerts", "submit"):
        series += histogram(
            "expressway_ca_request_duration_seconds",
            f'{job},ca="corp-est",kind="est",op="{op}"',
            0.2,
            3,
        )
    return [{"series": s, "values": f"{v}+0x90"} for s, v in series]


GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


@pytest.mark.integration
@pytest.mark.parametrize("target", [".*", "expe-e1"], ids=["all-targets", "one-target"])
@pytest.mark.parametrize("at", ["10m", "80m"], ids=["renewed-in-range", "renewed-before-range"])
def test_dashboard_queries_return_data_for_healthy_fleet(
    promtool: str, tmp_path: Path, target: str, at: str
) -> None:
    # Each query becomes an alert that fires when the query is empty or only NaN; a healthy
    # fleet must silence them all. A query for a target that does not exist proves the
    # harness notices. At 10m the renewals' counters appeared within the dashboard range
    # ($__range, 1h); at 80m they are older and flat.
    rules = []
    cases: list[dict[str, Any]] = []
    queries = [*dashboard_queries(), ("control", 'expressway_probe_success{target="nope"}')]
    for n, (where, query) in enumerate(queries):
        expr = query
        for var, value in {"$target": target, **GRAFANA_VARIABLES}.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, f"{where}: unknown Grafana variable in {expr}"
        name = f"EmptyQuery{n}"
        nan_free = f"({expr}) == ({expr})"  # NaN == NaN is false
        rules.append({"alert": name, "expr": f"vector(1) unless on () count({nan_free})"})
        case: dict[str, Any] = {"eval_time": at, "alertname": name}
        if where == "control":
            case["exp_alerts"] = [{"exp_labels": {}}]
        cases.append(case)
    # JSON is YAML: promtool reads these files as they are.
    (tmp_path / "dashboard.rules.json").write_text(
        json.dumps({"groups": [{"name": "dashboard", "rules": rules}]})
    )
    (tmp_path / "dashboard.test.json").write_text(
        json.dumps(
            {
                "rule_files": ["dashboard.rules.json"],
                "evaluation_interval": "1m",
                "tests": [
                    {
                        "interval": "1m",
                        "input_series": healthy_fleet_series(),
                        "alert_rule_test": cases,
                    }
                ],
            }
        )
    )
    check = run(promtool, "check", "rules", tmp_path / "dashboard.rules.json")
    assert check.returncode == 0, f"invalid PromQL in the dashboard: {check.stdout}{check.stderr}"
    out = run(promtool, "test", "rules", tmp_path / "dashboard.test.json")
    failed = sorted({int(n) for n in re.findall(r"alertname: EmptyQuery(\d+),", out.stderr)})
    empty = "\n".join(f"  {queries[n][0]}: {rules[n]['expr']}" for n in failed)
    assert out.returncode == 0, (
        f"dashboard queries wrong for a healthy fleet:\n{empty or out.stdout + out.stderr}"
    )


# --- dashboard queries while a target changes owner (replicas, issue 11) ----------------------

OLD_OWNER, NEW_OWNER = "127.0.0.1:9464", "127.0.0.2:9464"


def on_one_instance(expr: str, instance: str) -> str:
    """`expr` with every daemon metric selector restricted to one `instance`."""

    def restrict(m: re.Match[str]) -> str:
        return f'{m[1]}{{instance="{instance}"' + ("," if m[2] else "}")

    return re.sub(r"\b(expressway_[a-z0-9_]+)(\{)?", restrict, expr)


def test_on_one_instance_restricts_every_selector() -> None:
    assert on_one_instance('sum(a_x) + max by (t) (expressway_a{t="1"}[5m]) + expressway_b', "i") == (
        'sum(a_x) + max by (t) (expressway_a{instance="i",t="1"}[5m]) + expressway_b{instance="i"}'
    )  # fmt: skip


def owner_change_series() -> list[dict[str, str]]:
    """The healthy fleet, while every target moves to another replica: the new owner exports
    each gauge too, and the old owner's series are still within Prometheus' lookback (the old
    replica died, or the scrape after the move has not come yet). Counters and histograms are
    per process and count different events, so only the old owner has them here."""
    per_process = ("_total{", "_bucket{", "_count{", "_sum{")
    # one endpoint unhealthy, so that sums and counts of problems are not all zero
    broken = ("probe_success{", "chain_ok{", "san_ok{", "eku_ok{")
    series = [
        {**s, "values": "0+0x90"}
        if 'port="8443"' in s["series"] and any(b in s["series"] for b in broken)
        else {**s, "values": f"{10 * 86400}+0x90"}
        if 'port="8443"' in s["series"] and "not_after" in s["series"]
        else s
        for s in healthy_fleet_series()
    ]
    moved = [
        {**s, "series": s["series"].replace(f'instance="{OLD_OWNER}"', f'instance="{NEW_OWNER}"')}
        for s in series
        if s["series"].startswith("expressway_") and not any(p in s["series"] for p in per_process)
    ]
    return series + moved


@pytest.mark.integration
def test_dashboard_counts_each_endpoint_once_while_its_owner_changes(
    promtool: str, tmp_path: Path
) -> None:
    # Issue 11 part 2: an owner change (another `instance`) must not change what a panel shows.
    # Each query must give, with both owners' series present, the same number of results and
    # the same total as with the old owner's alone. A query that forgets to aggregate
    # `instance` away shows every endpoint twice (or counts it twice) for up to 5 minutes.
    rules, cases = [], []
    queries = dashboard_queries()
    for n, (_where, query) in enumerate(queries):
        expr = query
        for var, value in {"$target": ".*", **GRAFANA_VARIABLES}.items():
            expr = expr.replace(var, value)
        alone = on_one_instance(expr, OLD_OWNER)
        rules.append(
            {
                "alert": f"Doubled{n}",
                "expr": f"(count({expr}) != count({alone})) "
                f"or (abs(sum({expr}) - sum({alone})) > 0.001)",
            }
        )
        cases.append({"eval_time": "10m", "alertname": f"Doubled{n}"})
    (tmp_path / "owner.rules.json").write_text(
        json.dumps({"groups": [{"name": "owner-change", "rules": rules}]})
    )
    (tmp_path / "owner.test.json").write_text(
        json.dumps(
            {
                "rule_files": ["owner.rules.json"],
                "evaluation_interval": "1m",
                "tests": [
                    {
                        "interval": "1m",
                        "input_series": owner_change_series(),
                        "alert_rule_test": cases,
                    }
                ],
            }
        )
    )
    check = run(promtool, "check", "rules", tmp_path / "owner.rules.json")
    assert check.returncode == 0, check.stdout + check.stderr
    out = run(promtool, "test", "rules", tmp_path / "owner.test.json")
    doubled = sorted({int(n) for n in re.findall(r"alertname: Doubled(\d+),", out.stderr)})
    names = "\n".join(f"  {queries[n][0]}: {queries[n][1]}" for n in doubled)
    assert out.returncode == 0, f"panels that show a moved target twice:\n{names or out.stderr}"
