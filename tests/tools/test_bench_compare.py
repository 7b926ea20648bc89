"""`python tools/bench_compare.py`: a rerun's speed-ups against a reference run's round ranges."""

import json
from pathlib import Path

import pytest

from bench_compare import compare, main, ratio

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


MACHINE = {"cpu": "AMD EPYC", "cpu_count": 2, "torch_threads": 2, "torch": "2.13.0+cpu"}


def attention_run(folder: Path, hf_times: list[float], machine: dict = MACHINE) -> Path:
    folder.mkdir()
    rows = [{"length": 4096, "method": "dense", "mode": "forward", "times_ms": [300.0, 310.0, 320.0]},
            {"length": 4096, "method": "sparse", "mode": "forward", "times_ms": [60.0, 62.0, 64.0]},
            {"length": 4096, "method": "sparse_proj", "mode": "forward", "times_ms": [140.0, 142.0, 150.0]},
            {"length": 4096, "method": "hf", "mode": "forward", "times_ms": hf_times},
            {"length": 8192, "method": "hf", "mode": "forward", "skipped": "above hf_max_length"}]
    (folder / "attention.json").write_text(json.dumps({"benchmark": "attention", "machine": machine, "rows": rows}))
    (folder / "table1_quick.json").write_text(json.dumps({"preset": "quick"}))  # no speed-up to compare
    return folder


def test_ratio_gives_the_median_ratio_and_the_range_the_rounds_allow():
    assert ratio([4.0, 6.0, 5.0], [1.0, 2.0, 1.0]) == (5.0, 2.0, 6.0)


def test_a_rerun_inside_the_reference_range_reproduces_and_one_outside_does_not(tmp_path, capsys):
    reference = attention_run(tmp_path / "ref", [280.0, 290.0, 300.0])
    same = attention_run(tmp_path / "same", [285.0, 295.0, 305.0])
    slower_hf = attention_run(tmp_path / "slow", [600.0, 620.0, 650.0])
    assert [(name, inside) for name, _, _, inside in compare(reference, same)] == [
        ("attention: dense/sparse forward 4096", True), ("attention: hf/sparse_proj forward 4096", True)]
    assert main([str(reference), str(same)]) == 0
    assert main([str(reference), str(slower_hf)]) == 1
    printed = capsys.readouterr().out
    assert "attention: hf/sparse_proj forward 4096: 2.04x (rounds 1.87-2.14), rerun 4.37x  OUTSIDE" in printed
    assert "1 of 2 ratios inside" in printed


def test_the_committed_run_reproduces_itself_and_a_folder_without_ratios_fails(tmp_path):
    assert main([str(BENCHMARKS), str(BENCHMARKS)]) == 0
    assert main([str(BENCHMARKS), str(tmp_path)]) == 1  # nothing compared is no evidence
    with pytest.raises(SystemExit):
        main([str(BENCHMARKS)])


def test_output_writes_a_reproduction_section_that_verify_accepts(tmp_path, capsys):
    from bench_verify import check

    reference = attention_run(tmp_path / "ref", [280.0, 290.0, 300.0])
    rerun = attention_run(tmp_path / "rerun", [600.0, 620.0, 650.0])
    assert main([str(reference), str(rerun), "--output", str(rerun)]) == 1
    result = json.loads((rerun / "reproduction.json").read_text())
    assert result["command"] == f"python tools/bench_compare.py {reference} {rerun} --output {rerun}"
    assert [r["inside"] for r in result["rows"]] == [True, False]
    section = (rerun / "BENCHMARKS.md").read_text()
    assert "| attention: hf/sparse_proj forward 4096 | 2.04x | 1.87-2.14 | 4.37x | 4.00-4.64 | **no** |" in section
    assert "Both runs: AMD EPYC, 2 cores, 2 torch threads, torch 2.13.0+cpu." in section
    assert "1 of 2 speed-ups inside the reference's range." in section
    assert check(rerun) == []


def test_a_run_on_another_machine_is_listed_but_never_a_reproduction(tmp_path, capsys):
    from bench_compare import result_of, same_machine

    reference = attention_run(tmp_path / "ref", [280.0, 290.0, 300.0])
    intel = attention_run(tmp_path / "intel", [285.0, 295.0, 305.0], {**MACHINE, "cpu": "Intel Xeon"})
    assert all(inside for *_, inside in compare(reference, intel))
    assert main([str(reference), str(intel)]) == 1
    assert "Intel Xeon, 2 cores, 2 torch threads, torch 2.13.0+cpu. Different (or unknown) machines" in (
        capsys.readouterr().out)
    assert same_machine(result_of(reference, intel, "cmd")) is False
    assert main([str(reference), str(attention_run(tmp_path / "same", [285.0, 295.0, 305.0]))]) == 0
