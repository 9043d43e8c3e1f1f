"""The dry run behind `plan`: the pipeline's read-only first stages (snapshot, preflight),
the same functions the runner calls (looked up in STAGE_FUNCTIONS), on a record that is
never stored, so `plan` and a real renewal cannot drift apart.

Only stages that change nothing on a box or at a CA may be listed in DRY_RUN_STAGES: the
csr stage generates a CSR on the box, so the dry run stops before it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from expressway_certd.monitor.config import Config, ExpresswayConfig
from expressway_certd.monitor.probe import Prober
from expressway_certd.renewers.ca.base import CAConnector
from expressway_certd.renewers.pipeline.context import Context, Devices, expected, outcome_of_error
from expressway_certd.renewers.pipeline.outcomes import Advance, Outcome
from expressway_certd.renewers.pipeline.record import SERVER, RenewalRecord, check_kind
from expressway_certd.renewers.pipeline.stages import STAGE_FUNCTIONS

log = structlog.get_logger("renewers.pipeline")

DRY_RUN_STAGES = ("snapshot", "preflight")


@dataclass(frozen=True)
class DryRun:
    """What the first stages found: the record they built and each stage's outcome, up to
    the first that did not advance."""

    record: RenewalRecord
    outcomes: tuple[tuple[str, Outcome], ...]

    @property
    def stopped(self) -> tuple[str, str] | None:
        """The stage that did not advance (it would block, wait or fail) and why, else None."""
        if not self.outcomes:
            return None
        stage, outcome = self.outcomes[-1]
        return None if isinstance(outcome, Advance) else (stage, outcome.why)


async def dry_run(
    config: Config,
    target: ExpresswayConfig,
    ca: CAConnector,
    devices: Devices,
    prober: Prober,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    kind: str = SERVER,
) -> DryRun:
    """Run DRY_RUN_STAGES for `target` as the runner would (same functions, same mapping of
    errors to outcomes); nothing is persisted and no lock is taken."""
    if target.renewal is None:
        raise ValueError(f"{target.name}: dry run of a target without renewal")
    ctx = Context(
        renewal_id="(plan)", target=target, config=config, devices=devices, ca=ca,
        ca_name=target.renewal.ca_for(kind), prober=prober, now=now,
        record=RenewalRecord(kind=check_kind(kind)),
    )  # fmt: skip
    outcomes: list[tuple[str, Outcome]] = []
    for stage in DRY_RUN_STAGES:
        try:
            outcome = await STAGE_FUNCTIONS[stage](ctx)
        except Exception as exc:  # the runner's table decides what it means
            if not expected(exc):
                log.exception("dry run: stage raised", target=target.name, stage=stage)
            outcome = outcome_of_error(ctx, stage, exc)
        outcomes.append((stage, outcome))
        if not isinstance(outcome, Advance):
            break
    return DryRun(ctx.record, tuple(outcomes))
