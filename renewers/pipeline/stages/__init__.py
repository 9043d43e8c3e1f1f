"""The twelve stages, one module each, in the order of `STAGES`; `STAGE_FUNCTIONS` maps a
stage's name to its function (the runner looks it up there at every step)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from expressway_certd.renewers.pipeline.context import Context
from expressway_certd.renewers.pipeline.outcomes import Outcome
from expressway_certd.renewers.pipeline.stages.approve import stage_approve
from expressway_certd.renewers.pipeline.stages.csr import stage_csr
from expressway_certd.renewers.pipeline.stages.install import stage_install
from expressway_certd.renewers.pipeline.stages.issued import stage_issued
from expressway_certd.renewers.pipeline.stages.preflight import stage_preflight
from expressway_certd.renewers.pipeline.stages.restart import stage_restart
from expressway_certd.renewers.pipeline.stages.snapshot import stage_snapshot
from expressway_certd.renewers.pipeline.stages.submit import stage_submit
from expressway_certd.renewers.pipeline.stages.trust import stage_trust
from expressway_certd.renewers.pipeline.stages.ucm_restart import stage_ucm_restart
from expressway_certd.renewers.pipeline.stages.validate import stage_validate
from expressway_certd.renewers.pipeline.stages.verify import stage_verify

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
