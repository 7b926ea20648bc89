"""The paper's Table 1: `runner.py` (presets and the run, built from `sdbert.training`), `table.py`
(rows and paired statistics), `report.py` (report.md, plots, the BENCHMARKS.md section)."""
