"""`sdbert bench attention ...`: measure, print tables, write JSON, a plot and BENCHMARKS.md.

Each benchmark is a sub-subcommand registered in `BENCHMARKS` (name -> (add_arguments, run));
`model`, `train` and `serve` slot in beside `attention`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sdbert.bench.report import int_list
from sdbert.cli_args import non_negative_float, non_negative_int, positive_int
from sdbert.errors import ConfigError, missing_hint

# --- attention ----------------------------------------------------------------------------------

def add_attention_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lengths", type=int_list, default=(512, 1024, 2048, 4096, 8192),
                   help="comma-separated sequence lengths (default 512,1024,2048,4096,8192)")
    p.add_argument("--batch", type=positive_int, default=1)
    p.add_argument("--heads", type=positive_int, default=12)
    p.add_argument("--head-dim", type=positive_int, default=64)
    p.add_argument("--block-size", type=positive_int, default=64)
    p.add_argument("--random-blocks", type=non_negative_int, default=3)
    p.add_argument("--repeats", type=positive_int, default=5, help="timed rounds per case at least (median reported)")
    p.add_argument("--min-seconds", type=non_negative_float, default=3.0,
                   help="extra rounds for short lengths until about this many seconds per length (default 3)")
    p.add_argument("--warmup", type=non_negative_int, default=1, help="untimed runs per case first")
    p.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--backward", action=argparse.BooleanOptionalAction, default=True,
                   help="also time forward+backward (default on)")
    p.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True,
                   help="measure peak memory, one fresh process per case (default on)")
    p.add_argument("--methods", type=lambda s: tuple(s.split(",")), default=None,
                   help="comma-separated subset of dense,sparse,sparse_pytorch,sparse_proj,hf,flex "
                        "(default all but flex, which compiles once per shape)")
    p.add_argument("--hf", action=argparse.BooleanOptionalAction, default=True,
                   help="include Hugging Face BigBird when transformers is installed (default on)")
    p.add_argument("--hf-max-length", type=positive_int, default=8192,
                   help="longest length to run Hugging Face BigBird at (default 8192; it needs ~15 GB at 16384)")
    p.add_argument("--allocator", choices=("reuse", "default"), default="reuse",
                   help="reuse (default): glibc keeps freed memory for the next round, so no case is timed on "
                        "page faults; default: glibc's own behaviour (see sdbert.bench.allocator)")
    p.add_argument("--output", type=Path, default=Path("benchmarks"),
                   help="folder for NAME.json, NAME.png and BENCHMARKS.md")
    p.add_argument("--name", default="attention",
                   help="file stem and BENCHMARKS.md section of this run (default attention), e.g. attention_batch8")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def run_attention(args: argparse.Namespace) -> int:
    from sdbert.bench import attention as bench

    name = args.name
    if not name or any(c in name for c in "/\\ ") or name.startswith("."):
        raise ConfigError(f"--name must be a plain file stem, got {name!r}")
    cfg, notes = attention_config(args)
    result = bench.run_attention_bench(cfg, progress=args.progress)
    result["notes"] = notes + result.get("notes", [])
    print_attention(result, cfg, notes)
    write_attention(result, args.output, name)
    return 0


def attention_config(args: argparse.Namespace):
    """The benchmark's config from the flags, and notes on what was left out (HF without transformers)."""
    import torch

    from sdbert.bench import attention as bench

    methods, notes = args.methods or bench.DEFAULT_METHODS, []
    if not args.hf:
        methods = tuple(m for m in methods if m != "hf")
    elif "hf" in methods and not bench.hf_available():
        methods = tuple(m for m in methods if m != "hf")
        notes.append(f"Hugging Face BigBird skipped: {missing_hint('transformers', 'its column')}.")
    try:
        cfg = bench.AttentionBenchConfig(
            lengths=args.lengths, batch=args.batch, heads=args.heads, head_dim=args.head_dim,
            block_size=args.block_size, random_blocks=args.random_blocks, repeats=args.repeats,
            min_seconds=args.min_seconds, warmup=args.warmup, backward=args.backward, methods=methods,
            memory=args.memory, hf_max_length=args.hf_max_length, threads=args.threads or torch.get_num_threads(),
            allocator=args.allocator)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    return cfg, notes


def print_attention(result: dict, cfg, notes: list[str]) -> None:
    from sdbert.bench import attention as bench
    from sdbert.bench.report import text_table

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
    from sdbert.bench import attention as bench
    from sdbert.bench.report import update_markdown_section
    from sdbert.io import write_json

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
    from sdbert.bench.attention import METHODS, lookup
    from sdbert.bench.report import plot_scaling

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

def _library_benchmark(name: str):
    """`(add_arguments, run)` for `sdbert.bench.<name>`, which provides `add_arguments`, `run_from_args`,
    `text_report` and `markdown_report`; `run` prints the report, writes `<name>.json` and its
    section of BENCHMARKS.md."""
    import importlib

    def add(p: argparse.ArgumentParser) -> None:
        importlib.import_module(f"sdbert.bench.{name}").add_arguments(p)

    def run_fn(args: argparse.Namespace) -> int:
        from sdbert.bench.report import update_markdown_section
        from sdbert.io import write_json

        module = importlib.import_module(f"sdbert.bench.{name}")
        result = module.run_from_args(args)
        print(module.text_report(result))
        stem = getattr(args, "name", None) or name  # a benchmark with `--name` keeps several runs apart
        write_json(args.output / f"{stem}.json", result)
        update_markdown_section(args.output / "BENCHMARKS.md", stem, module.markdown_report(result))
        print(f"\nwrote {args.output / f'{stem}.json'} and {args.output / 'BENCHMARKS.md'}")
        return 0

    return add, run_fn


# --- dispatch -----------------------------------------------------------------------------------

BENCHMARKS = {
    "attention": (add_attention_arguments, run_attention,
                  "dense SDPA vs our block-sparse kernel vs Hugging Face BigBird"),
    "train": (*_library_benchmark("train"), "fine-tuning examples/s: our training loop vs a plain Hugging Face loop"),
    "model": (*_library_benchmark("model"),
              "inference throughput, latency, parameters and size on disk of model folders"),
    "encoder": (*_library_benchmark("encoder"),
                "one model's whole forward pass with block-sparse vs full attention, beside the FLOP bound"),
    "serve": (*_library_benchmark("serve"), "HTTP service load test on loopback: latency percentiles, throughput"),
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
