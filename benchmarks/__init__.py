"""Benchmark scripts: each `bench_<name>.py` exposes `run() -> dict` and prints its figures."""
