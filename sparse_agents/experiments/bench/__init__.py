"""Benchmark logic behind the thin ``scripts/bench_*.py`` entry points: one module per
benchmark, each with ``build_parser()`` and ``main(argv) -> int``; every timing goes
through :mod:`sparse_agents.timing`."""
