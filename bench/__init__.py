"""Benchmarks (installed as ``mmgen.bench``): speed, memory and quality measurements, and the paradigm comparison.

The ``bench_*.py`` files are scripts (``python bench/bench_sampling.py``) that print tables and
write ``results/``; :mod:`mmgen.bench.compare` trains every paradigm for ``mmgen bench compare``.
Timing and memory limits live here, never in the tests.
"""
