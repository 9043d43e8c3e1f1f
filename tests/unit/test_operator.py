"""`approve --by` / `cancel --by` names: bounded and plain (issue 13 finding 7)."""

from __future__ import annotations

import pytest

from expressway_certd.monitor.errors import CertdError
from expressway_certd.monitor.operator import MAX_OPERATOR_LENGTH, operator_name


@pytest.mark.parametrize("name", ["jdoe", "CORP\\jdoe", "j.doe@corp.example", " Jane Doe "])
def test_plain_names_are_kept(name: str) -> None:
    assert operator_name(name) == name.strip()


@pytest.mark.parametrize(
    "name",
    [
        "<b>boss</b>",
        "x\x1b[31mred",
        "a\x00b",
        "'; DROP TABLE renewals; --",
        "",
        "   ",
        "x" * (MAX_OPERATOR_LENGTH + 1),
        "line\nbreak",
    ],
)
def test_markup_control_characters_and_long_names_are_refused(name: str) -> None:
    with pytest.raises(CertdError, match="operator name"):
        operator_name(name)


def test_the_error_does_not_echo_an_unbounded_name() -> None:
    with pytest.raises(CertdError) as caught:
        operator_name("y" * 10_000)
    assert len(str(caught.value)) < 300
