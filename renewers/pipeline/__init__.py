"""The renewal pipeline: Cisco's procedure (steps A to E) as a persisted state machine.

Each stage is a small async function `(Context) -> Advance | Wait | Blocked | Failed`. The
runner persists the outcome (and the stage context) BEFORE anything else happens, so a kill -9
at any point resumes from the last persisted stage; every stage first reads the box's state,
so running it twice does no harm (a pending CSR is reused, never discarded; trust is listed
before it is added; the installed certificate is compared before an upload; the served
certificate is checked before a restart).

    snapshot -> preflight -> csr -> submit -> issued -> validate -> trust -> approve
             -> ucm-restart -> install -> restart -> verify -> done

Modules, one seam each: outcomes.py (what a stage returns; the pure `transition`),
record.py (the typed renewal record, stored as the `data` column), context.py (what a
stage works with; the `Devices` Protocol), locks.py (leases, heartbeat,
same-host takeover), stages/ (one module per stage; `STAGE_FUNCTIONS`), commands.py (what an
operator may do in which state), runner.py (`Pipeline`: runs stages, operator commands),
dryrun.py (the read-only first stages for `plan`).
This module re-exports the names other packages and tests use.
"""

from __future__ import annotations

from expressway_certd.renewers.pipeline.commands import accepts_certificate, ways_out
from expressway_certd.renewers.pipeline.context import (
    ConfiguredDevices,
    Context,
    Devices,
    FaultSeam,
    no_faults,
)
from expressway_certd.renewers.pipeline.dryrun import DRY_RUN_STAGES, DryRun, dry_run
from expressway_certd.renewers.pipeline.locks import (
    BUSY_WAIT,
    LEASE,
    RenewalHold,
    claim_or_take_over,
    holding,
    keep_alive,
    take_lease,
)
from expressway_certd.renewers.pipeline.outcomes import (
    RETRY_BACKOFF,
    STAGES,
    Advance,
    Blocked,
    Failed,
    Outcome,
    OutcomeReason,
    Wait,
    stage_event,
    transition,
)
from expressway_certd.renewers.pipeline.record import (
    CLIENT,
    KINDS,
    SERVER,
    IssuedCert,
    RecordError,
    RenewalRecord,
    Snapshot,
    TrustedCa,
    kind_of,
    record_of,
)
from expressway_certd.renewers.pipeline.runner import Pipeline, StageObserver
from expressway_certd.renewers.pipeline.stages import STAGE_FUNCTIONS
from expressway_certd.renewers.pipeline.stages.approve import stage_approve
from expressway_certd.renewers.pipeline.stages.csr import csr_fits, stage_csr
from expressway_certd.renewers.pipeline.stages.install import stage_install
from expressway_certd.renewers.pipeline.stages.issued import stage_issued
from expressway_certd.renewers.pipeline.stages.preflight import stage_preflight, zone_kinds
from expressway_certd.renewers.pipeline.stages.restart import stage_restart
from expressway_certd.renewers.pipeline.stages.snapshot import stage_snapshot
from expressway_certd.renewers.pipeline.stages.submit import stage_submit
from expressway_certd.renewers.pipeline.stages.trust import stage_trust, trust_boxes
from expressway_certd.renewers.pipeline.stages.ucm_restart import stage_ucm_restart
from expressway_certd.renewers.pipeline.stages.validate import stage_validate
from expressway_certd.renewers.pipeline.stages.verify import stage_verify

__all__ = [
    "BUSY_WAIT",
    "CLIENT",
    "DRY_RUN_STAGES",
    "KINDS",
    "LEASE",
    "RETRY_BACKOFF",
    "SERVER",
    "STAGES",
    "STAGE_FUNCTIONS",
    "Advance",
    "Blocked",
    "ConfiguredDevices",
    "Context",
    "Devices",
    "DryRun",
    "Failed",
    "FaultSeam",
    "IssuedCert",
    "Outcome",
    "OutcomeReason",
    "Pipeline",
    "RecordError",
    "RenewalHold",
    "RenewalRecord",
    "Snapshot",
    "StageObserver",
    "TrustedCa",
    "Wait",
    "accepts_certificate",
    "claim_or_take_over",
    "csr_fits",
    "dry_run",
    "holding",
    "keep_alive",
    "kind_of",
    "no_faults",
    "record_of",
    "stage_approve",
    "stage_csr",
    "stage_event",
    "stage_install",
    "stage_issued",
    "stage_preflight",
    "stage_restart",
    "stage_snapshot",
    "stage_submit",
    "stage_trust",
    "stage_ucm_restart",
    "stage_validate",
    "stage_verify",
    "take_lease",
    "transition",
    "trust_boxes",
    "ways_out",
    "zone_kinds",
]
