"""`sdbert bench attention ...`: measure, print tables, write JSON, a plot and BENCHMARKS.md.

Each benchmark is a sub-subcommand registered in `BENCHMARKS` (name -> (add_arguments, run));
`model` and `train` slot in beside `attention` (the HTTP load test is `tools/bench_serve.py`).
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from types import ModuleType

from sdbert.bench import attention as bench
from sdbert.bench.attention import METHODS, AttentionBenchConfig, lookup
from sdbert.bench.report import add_output_arguments, bench_config, plot_scaling, text_table, update_markdown_section
from sdbert.cli_args import add_config_arguments
from sdbert.errors import ConfigError, missing_hint
from sdbert.io import write_json

# --- attention ----------------------------------------------------------------------------------

def add_attention_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p, AttentionBenchConfig)
    p.add_argument("--hf", action=argparse.BooleanOptionalAction, default=True,
                   help="include Hugging Face BigBird when transformers is installed (default on)")
    add_output_arguments(p, "attention")


def run_attention(args: argparse.Namespace) -> int:
    cfg, notes = attention_config(args)
    result = bench.run_attention_bench(cfg, progress=args.progress)
    result["notes"] = notes + result.get("notes", [])
    print_attention(result, cfg, notes)
    write_attention(result, args.output, args.name)
    return 0


def attention_config(args: argparse.Namespace):
    """The benchmark's config from the flags, and notes on what was left out (HF without transformers)."""
    methods, notes = args.methods, []
    if not args.hf:
        methods = tuple(m for m in methods if m != "hf")
    elif "hf" in methods and not bench.hf_available():
        methods = tuple(m for m in methods if m != "hf")
        notes.append(f"Hugging Face BigBird skipped: {missing_hint('transformers', 'its column')}.")
    return bench_config(bench.AttentionBenchConfig, args, methods=methods), notes


def print_attention(result: dict, cfg, notes: list[str]) -> None:
    machine = result["machine"]
    print(f"{machine['cpu']}, {machine['torch_threads']} threads, torch {machine['torch']}")
    print(f"batch {cfg.batch}, {cfg.heads} heads x {cfg.head_dim}, block {cfg.block_size}, "
          f"r = {cfg.random_blocks}, fp32, median of >= {cfg.repeats} rounds; dense fallback "
          f"<= {cfg.dense_fallback_length} tokens")
    print(bench.kernel_line(result))
    print(bench.path_summary(result))
    for key in ("median_ms", "peak_mb") if cfg.memory else ("median_ms",):
        for mode in cfg.modes:
            header, rows = bench.summary_rows(result, mode, key)
            title = ("time, " if key == "median_ms" else "peak memory, ") + mode.replace("_", " + ")
            print(f"\n{title}\n{text_table(header, rows)}")
    checks = bench.scaling_checks(result)
    if checks:
        print("\n" + "\n".join(checks))
    for note in notes:
        print(note)


def write_attention(result: dict, out: Path, name: str) -> None:
    """NAME.json, NAME.png and the NAME section of BENCHMARKS.md in `out`."""
    if name != "attention":
        result["command"] += f" --name {name}"
    plotted = _plot(result, out / f"{name}.png")
    result.update(name=name, plot=f"{name}.png" if plotted else None)
    write_json(out / f"{name}.json", result)
    update_markdown_section(out / "BENCHMARKS.md", name, bench.markdown_report(result))
    print(f"\nwrote {out / f'{name}.json'}" + (f", {out / f'{name}.png'}" if plotted else "")
          + f" and {out / 'BENCHMARKS.md'}")
    if not plotted:
        print(f"plot skipped: {missing_hint('matplotlib', 'the plot')}")


def _plot(result: dict, path: Path) -> bool:
    cfg = result["config"]
    series: dict = {"time_ms": {}, "memory_mb": {}}
    for panel, key in (("time_ms", "median_ms"), ("memory_mb", "peak_mb")):
        values = lookup(result, key)
        for method in cfg["methods"]:
            for mode in ("forward", "forward_backward") if cfg["backward"] else ("forward",):
                label = METHODS[method] + (" fwd+bwd" if mode == "forward_backward" else " fwd")
                series[panel][label] = [(n, values[(n, method, mode)]) for n in cfg["lengths"]]
    title = (f"attention, batch {cfg['batch']}, {cfg['heads']} heads x {cfg['head_dim']}, block "
             f"{cfg['block_size']}, r={cfg['random_blocks']}, fp32, {result['machine']['cpu']}, "
             f"{result['machine']['torch_threads']} threads")
    return plot_scaling(path, series, title)


# --- train, model: arguments and reports live in sdbert.bench.<name>; here they are printed --------

def benchmark_command(module: ModuleType, name: str):
    """`(add_arguments, run)` for a benchmark module (`sdbert.bench.<name>`, or a repository tool such as
    `bench_serve`), which provides `add_arguments`, `run_from_args`, `text_report` and `markdown_report`;
    `run` prints the report, writes `<name>.json` and its section of BENCHMARKS.md."""
    def add(p: argparse.ArgumentParser) -> None:
        module.add_arguments(p)

    def run_fn(args: argparse.Namespace) -> int:
        result = module.run_from_args(args)
        print(module.text_report(result))
        stem = args.name  # `--name` keeps several runs of one benchmark apart
        if stem != name and f"--name {stem}" not in result["command"]:
            result["command"] += f" --name {stem}"
        write_json(args.output / f"{stem}.json", result)
        update_markdown_section(args.output / "BENCHMARKS.md", stem, module.markdown_report(result))
        print(f"\nwrote {args.output / f'{stem}.json'} and {args.output / 'BENCHMARKS.md'}")
        return 0

    return add, run_fn


def _library_benchmark(name: str):
    return benchmark_command(importlib.import_module(f"sdbert.bench.{name}"), name)


# --- dispatch -----------------------------------------------------------------------------------

BENCHMARKS = {
    "attention": (add_attention_arguments, run_attention,
                  "dense SDPA vs our block-sparse kernel vs Hugging Face BigBird"),
    "train": (*_library_benchmark("train"), "fine-tuning examples/s: our training loop vs a plain Hugging Face loop"),
    "model": (*_library_benchmark("model"),
              "inference throughput, latency, parameters and size on disk of model folders"),
    "encoder": (*_library_benchmark("encoder"),
                "one model's whole forward pass with block-sparse vs full attention, beside the FLOP bound"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", parser_class=type(parser))
    for name, (add, run_fn, help_text) in BENCHMARKS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add(p)
        p.set_defaults(_bench_run=run_fn)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "benchmark", None) is None:
        raise ConfigError(f"choose a benchmark: {', '.join(BENCHMARKS)}")
    return args._bench_run(args)
