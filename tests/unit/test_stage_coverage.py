"""Every stage of the pipeline has unit tests with fakes (issue 10): some module of
tests/unit/ calls its stage function by name."""

from __future__ import annotations

import re
from pathlib import Path

from expressway_certd.renewers.pipeline import STAGES
from expressway_certd.renewers.pipeline.stages import STAGE_FUNCTIONS

UNIT = Path(__file__).resolve().parent


def test_every_stage_function_is_called_by_a_unit_test() -> None:
    assert set(STAGE_FUNCTIONS) == set(STAGES)
    text = "\n".join(p.read_text() for p in sorted(UNIT.glob("test_*.py")))
    untested = [
        stage
        for stage, function in STAGE_FUNCTIONS.items()
        if not re.search(rf"\bawait (\w+\.)?{function.__name__}\(", text)
    ]
    assert untested == []
