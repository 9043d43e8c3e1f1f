"""The twelve stages, one module each, in the order of `STAGES`; `STAGE_FUNCTIONS` maps a
stage's name to its function (the runner looks it up there at every step)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from renewers.pipeline.context import Context
from renewers.pipeline.outcomes import Outcome
from renewers.pipeline.stages.approve import stage_approve
from renewers.pipeline.stages.csr import stage_csr
from renewers.pipeline.stages.install import stage_install
from renewers.pipeline.stages.issued import stage_issued
from renewers.pipeline.stages.preflight import stage_preflight
from renewers.pipeline.stages.restart import stage_restart
from renewers.pipeline.stages.snapshot import stage_snapshot
from renewers.pipeline.stages.submit import stage_submit
from renewers.pipeline.stages.trust import stage_trust
from renewers.pipeline.stages.ucm_restart import stage_ucm_restart
from renewers.pipeline.stages.validate import stage_validate
from renewers.pipeline.stages.verify import stage_verify

STAGE_FUNCTIONS: dict[str, Callable[[Context], Awaitable[Outcome]]] = {
    "snapshot": stage_snapshot,
    "preflight": stage_preflight,
    "csr": stage_csr,
    "submit": stage_submit,
    "issued": stage_issued,
    "validate": stage_validate,
    "trust": stage_trust,
    "approve": stage_approve,
    "ucm-restart": stage_ucm_restart,
    "install": stage_install,
    "restart": stage_restart,
    "verify": stage_verify,
}
