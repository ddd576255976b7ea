"""aiolease's benchmark suite: figures and ratios against the floor and the peers, not tests.

Run with ``nox -s bench`` or ``python -m benchmarks [--quick]``; see docs/performance.md.
"""
