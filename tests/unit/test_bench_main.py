"""`python -m tests.bench NAME --option ...` passes the options to the one benchmark named."""

from __future__ import annotations

from tests.bench.__main__ import main, split_argv


def test_options_after_a_name_go_to_that_benchmark():
    assert split_argv(["scan", "--runs", "3", "--endpoints", "10"]) == (
        ["bench_scan"],
        ["--runs", "3", "--endpoints", "10"],
    )
    assert split_argv(["bench_probe", "scan"]) == (["bench_probe", "bench_scan"], [])
    assert split_argv([]) == ([], [])


def test_options_with_two_benchmarks_or_none_are_refused(capsys):
    assert main(["scan", "probe", "--runs", "1"]) == 2
    assert main(["--runs", "1"]) == 2
    assert "exactly one benchmark" in capsys.readouterr().out


def test_an_unknown_benchmark_is_named(capsys):
    assert main(["nosuch", "--runs", "1"]) == 2
    assert "unknown benchmark bench_nosuch" in capsys.readouterr().out
