"""The shared timing rules of every benchmark: interleaving, spreads, noise verdicts, calibration."""

import pytest

from sdbert.bench.timing import gemm_calibration, interleaved_rounds, overlap, percent_of_peak, speedup, spread


def test_rounds_are_interleaved_and_warmup_is_not_timed():
    calls = []
    times = interleaved_rounds({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=5, warmup=2)
    assert calls == ["a", "b"] * 7
    assert [len(v) for v in times.values()] == [5, 5]


def test_speedup_is_a_number_only_when_rounds_do_not_overlap():
    slow, fast = [2.0, 2.1, 2.2, 2.05, 2.15], [1.0, 1.1, 1.05, 1.02, 1.08]
    assert speedup(slow, fast) == {"ratio": pytest.approx(2.1 / 1.05, abs=1e-3), "within_noise": False}
    noisy = [1.0, 1.1, 2.3, 1.05, 1.02]
    assert overlap(slow, noisy) and speedup(slow, noisy)["within_noise"]
    assert spread([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0}


def test_gemm_calibration_measures_both_shapes():
    result = gemm_calibration((8, 16, 16, 48), size=128, rounds=3)
    assert result["square_gflops"] > 0 and result["tile_gflops"] > 0
    assert result["tile_shape"] == [8, 16, 16, 48]
    assert percent_of_peak(result["square_gflops"] / 2, result) == pytest.approx(50.0, abs=0.1)
    assert percent_of_peak(None, result) is None
