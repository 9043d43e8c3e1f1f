"""Benchmarks (`make bench`, `python -m tests.bench`): they print figures, never assert on them."""
