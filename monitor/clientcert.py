"""What the monitor knows about a target's X15.5 client certificate, read through its API.

From X15.5 an Expressway keeps a client certificate next to the server certificate (Cisco doc
225693); the upgrade copies the old server certificate into it, so the copy expires on the old
date. The box presents it only as a TLS client (traversal zone, TFTP to Unified CM on 6972,
Webex), never on a port the probes reach, so it is read through the box's REST API instead
(renewers/clientcert.py) and exported with `cert_kind="client"` (alerts/metrics.py).

Pure: the state of one read, and how a failed read keeps the certificate of the latest good
one (as a failing probe keeps the served certificate's expiry).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from expressway_certd.monitor.eku import parse_version
from expressway_certd.monitor.facts import CertFacts

# The outcome of the latest read, the `status` label of expressway_client_cert_status.
STATUS_OK = "ok"  # read; facts are the box's client certificate
STATUS_NOT_APPLICABLE = "not_applicable"  # the box runs a version before X15.5: no client store
STATUS_UNPUBLISHED = "unpublished"  # X15.5+, but its /api/raml lists no client cert resource
STATUS_ERROR = "error"  # the read failed (unreachable, credentials, timeout, bad answer)
STATUSES = (STATUS_OK, STATUS_NOT_APPLICABLE, STATUS_UNPUBLISHED, STATUS_ERROR)

CLIENT_STORE_FROM = (15, 5, 0)


@dataclass(frozen=True)
class ClientCertState:
    """The latest read of one target's client certificate.

    `facts` is the certificate of the latest successful read: kept while later reads fail, so
    its expiry stays exported; dropped when the box says it has no client store or no resource.
    """

    target: str
    host: str  # the API host the certificate was read from
    port: int  # the API port
    status: str  # one of STATUSES
    read_at: datetime  # aware UTC
    version: str | None = None  # as the box reported it
    facts: CertFacts | None = None
    eku_problem: str | None = None  # the certificate lacks clientAuth (monitor.eku)
    error: str | None = None  # why the read failed or is unsupported, for the operator
    pem: str | None = None  # the certificate itself (public), for the trust map's chain check


def has_client_store(version: str | None) -> bool | None:
    """True from X15.5, False before it, None when the version is unknown."""
    parsed = parse_version(version)
    return None if parsed is None else parsed >= CLIENT_STORE_FROM


def merge(previous: ClientCertState | None, new: ClientCertState) -> ClientCertState:
    """`new`, carrying the previous certificate over a failed read (status `error`)."""
    if new.status != STATUS_ERROR or new.facts is not None or previous is None:
        return new
    return replace(new, facts=previous.facts, eku_problem=previous.eku_problem, pem=previous.pem)
