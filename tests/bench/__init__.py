"""Benchmarks (not tests: pytest does not collect ``bench_*.py``). Run each with
``.venv/bin/python -m tests.bench.<name>``; results go to ``tests/bench/results/<name>.json`` and
the table in ``docs/benchmarks.md`` (see ``tests.bench.report``)."""
