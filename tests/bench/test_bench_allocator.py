"""The attention benchmark's allocator switch: under "reuse" HF BigBird's forward stops page-faulting."""

import json
import subprocess
import sys
import textwrap

import pytest

from sdbert.bench import allocator
from sdbert.cli import main

glibc = pytest.mark.skipif(allocator._glibc_mallopt() is None, reason="mallopt needs glibc")

# Hugging Face BigBird's forward at 2,048 tokens (intermediates above glibc's 32 MiB mmap threshold):
# the median minor page faults of three rounds after a warm-up, in a fresh process.
HF_FORWARD_FAULTS = textwrap.dedent("""
    import statistics, sys
    from sdbert.bench import allocator
    from sdbert.bench.attention import AttentionBenchConfig, build_case
    print(allocator.configure(sys.argv[1]), file=sys.stderr)
    step = build_case("hf", "forward", AttentionBenchConfig(lengths=(2048,), threads=1), 2048)
    step()
    faults = []
    for _ in range(3):
        before = allocator.minor_faults()
        step()
        faults.append(allocator.minor_faults() - before)
    print(statistics.median(faults))
""")


def hf_forward_faults(mode: str) -> float:
    done = subprocess.run([sys.executable, "-c", HF_FORWARD_FAULTS, mode], capture_output=True, text=True, check=True)
    return float(done.stdout)


@glibc
def test_reuse_spares_hf_bigbird_the_page_faults_default_glibc_charges_every_call():
    pytest.importorskip("transformers")
    # Measured: 72k-87k faults a call (about 300 MB of fresh pages) by default; 0-9k under reuse, where
    # glibc's aligned allocations now and then miss a freed chunk and grow the heap instead.
    assert hf_forward_faults("default") > 50_000
    assert hf_forward_faults("reuse") < 20_000


@glibc
def test_configure_switches_both_ways_and_rejects_unknown_modes():
    assert allocator.configure("reuse").startswith("reuse")
    assert allocator.state().startswith("reuse")
    assert allocator.configure("default") == "default"
    with pytest.raises(ValueError, match="choose from"):
        allocator.configure("jemalloc")


@glibc
def test_bench_records_the_allocator_and_its_flag(tmp_path):
    tiny = ["--lengths", "256", "--heads", "2", "--head-dim", "16", "--block-size", "32", "--random-blocks", "1",
            "--methods", "sparse", "--repeats", "2", "--warmup", "0", "--min-seconds", "0", "--no-progress",
            "--no-memory", "--no-backward"]
    for mode in ("reuse", "default"):
        assert main(["bench", "attention", *tiny, "--allocator", mode, "--output", str(tmp_path)]) == 0
        result = json.loads((tmp_path / "attention.json").read_text())
        assert result["machine"]["allocator"].startswith(mode)
        assert result["command"].endswith("--allocator default") == (mode == "default")
        assert len(result["rows"][0]["minor_faults"]) == len(result["rows"][0]["times_ms"]) == 2
        assert f"memory allocator: {mode}" in (tmp_path / "BENCHMARKS.md").read_text()
