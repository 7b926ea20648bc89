"""Benchmarks: library code that measures and returns results; `sdbert bench` prints them.

`sdbert.bench.attention` times attention kernels side by side; `sdbert.bench.report` holds what
every benchmark shares (machine description, peak-memory probe, tables, plots, BENCHMARKS.md).
"""
