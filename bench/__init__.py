"""The benchmark: the shop against the conventional build, the ceiling and the floor, in one run.

``python -m bench`` (``make bench``) runs everything and rewrites ``BENCHMARKS.md``;
``python -m bench --quick`` is a smoke run of a couple of minutes. See ``bench/__main__.py``.
Nothing here is imported by the shop; tests/deploy/test_bench_report.py renders the report from
results of its own, with no server.
"""

# The parts of a run, in order (``python -m bench --only PART``).
PARTS = ("throughput", "floor", "scale", "stack", "edge", "invalidation")
