"""Benchmarks: each module has `main() -> None` and prints ratios against a same-run baseline."""
