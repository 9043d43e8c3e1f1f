"""Pure checks of a served certificate against what the Expressway needs (SAN and EKU rules)."""

from __future__ import annotations

from expressway_certd.monitor.config import ExpresswayConfig
from expressway_certd.monitor.eku import eku_problem
from expressway_certd.monitor.endpoint import Endpoint
from expressway_certd.monitor.facts import CertFacts, is_ip_address


def san_problem(facts: CertFacts, endpoint: Endpoint, target: ExpresswayConfig) -> str | None:
    """None when the SANs fit: no wildcard, the probed name present, the cluster FQDN present."""
    dns = {name.lower() for name in facts.dns_names}
    wildcards = sorted(n for n in dns if n.startswith("*"))
    if wildcards:
        return f"wildcard SAN {wildcards[0]} (Expressway does not support wildcard server certs)"
    wanted: list[str] = []
    for name in (endpoint.sni or endpoint.host, target.address):
        if not is_ip_address(name) and name.lower() not in wanted:
            wanted.append(name.lower())
    if target.cluster and target.cluster.lower() not in wanted:
        wanted.append(target.cluster.lower())
    missing = [name for name in wanted if name not in dns]
    if missing:
        return f"SAN list lacks {', '.join(missing)}"
    return None


def eku_problem_for(facts: CertFacts, target: ExpresswayConfig) -> str | None:
    return eku_problem(facts, target.version, target.role)
