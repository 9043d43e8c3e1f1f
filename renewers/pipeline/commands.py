"""What an operator may do with a renewal in a given state (docs/renewal.md, "Ways out")."""

from __future__ import annotations

from expressway_certd.monitor.store import RenewalRow


def accepts_certificate(row: RenewalRow) -> bool:
    """`provide` may hand in a certificate: while waiting for the CA, or after validate (or
    the trust stage's pinned-anchor check) refused the one at hand."""
    if not row.active:
        return False
    return row.stage in ("submit", "issued") or (
        row.status == "blocked" and row.stage in ("validate", "trust")
    )


def ways_out(row: RenewalRow) -> tuple[str, ...]:
    """The operator commands that move a renewal in this state on (docs/renewal.md, "Ways
    out"); empty for a finished one."""
    if not row.active:
        return ()
    out = [f"expressway-certd cancel {row.id}"]
    if row.status in ("blocked", "failed"):
        out.append(f"expressway-certd renew {row.target}")
    if row.status == "waiting" and row.stage == "approve":
        out.append(f"expressway-certd approve {row.id}")
    if accepts_certificate(row):
        out.append(f"expressway-certd provide {row.id} --cert CERT.pem [--chain CHAIN.pem]")
    return tuple(out)
