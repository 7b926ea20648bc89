"""Whole-encoder benchmark: one model, block-sparse attention against full attention.

The attention benchmark times the kernel alone; a user runs the whole encoder, where the q/k/v and
output projections and the feed-forward layers cost the same under either attention. This measures
what sparse attention buys end to end: the same weights run a forward pass with
`attention_type="block_sparse"` and with `"full"` (SDPA), side by side in one process (interleaved
rounds, medians), in fp32 under `torch.inference_mode()` on random ids without padding.

Beside each measured speed-up we print the arithmetic bound: the ratio of the two forward passes'
floating-point operations (matrix products only), the speed-up a kernel running every product at the
same rate would give. The projections and feed-forward layers are common to both, so sparse attention
beats the bound only by what full attention spends outside products (the softmax over its n x n
scores). The bound grows with length.

Weights are random (timing does not depend on their values): `--model DIR` takes only the folder's
config (hidden size, layers, heads, block size, ...), `--size` one of the built-in shapes.
"""

from __future__ import annotations

import gc
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from sdbert.attention import bigbird_block_layout
from sdbert.bench.report import (
    add_output_arguments,
    bench_config,
    describe_machine,
    int_list,
    markdown_table,
    text_table,
)
from sdbert.bench.timing import (
    finish,
    gemm_calibration,
    interleaved_rounds,
    kernel_text,
    percent_of_peak,
    provenance,
    speedup,
    speedup_text,
    spread,
)
from sdbert.checkpoint import load_config
from sdbert.cli_args import add_config_arguments, arg, non_negative_int, positive_int
from sdbert.config import SDBertConfig, dense_fallback_blocks
from sdbert.errors import ConfigError
from sdbert.model import SDBertForSequenceClassification

# Shapes without a checkpoint: the paper's teacher and the offline stand-in.
SIZES = {
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "minilm": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
}


@dataclass
class EncoderBenchConfig:
    """What to measure; every field is also a flag of `sdbert bench encoder`."""

    model: str | None = arg(None, "model folder whose config (shape, block size) is used; weights are random",
                            metavar="DIR")
    size: str = arg("base", "built-in shape when --model is not given: base (BERT/BigBird-base, the paper's "
                    "teacher) or minilm (all-MiniLM-L6-v2)", choices=sorted(SIZES))
    lengths: tuple[int, ...] = arg((4096,), "comma-separated lengths", type=int_list)
    batch: int = arg(1, "batch size", type=positive_int)
    block_size: int | None = arg(None, "override the config's block size", type=positive_int)
    random_blocks: int | None = arg(None, "override the config's random blocks", type=non_negative_int)
    repeats: int = arg(9, "timed rounds per length, the cases interleaved within each (median reported)",
                       type=positive_int)
    warmup: int = arg(1, "untimed rounds first", type=non_negative_int)
    threads: int | None = arg(None, "torch threads (default: torch's)", type=positive_int)

    def __post_init__(self):
        self.threads = self.threads or torch.get_num_threads()
        if self.model is None and self.size not in SIZES:
            raise ConfigError(f"size must be one of {', '.join(SIZES)}, got {self.size!r}")
        if not self.lengths or min(self.lengths) < 1 or self.batch < 1 or self.repeats < 1 or self.warmup < 0:
            raise ConfigError("lengths, batch and repeats must be positive, warmup >= 0")
        if self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")


def encoder_config(cfg: EncoderBenchConfig) -> SDBertConfig:
    if cfg.model is not None:
        base = load_config(cfg.model)
    else:
        base = SDBertConfig(vocab_size=30522, **SIZES[cfg.size])
    overrides = {"max_position_embeddings": max(max(cfg.lengths), base.max_position_embeddings),
                 "attention_type": "block_sparse", "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    if cfg.block_size is not None:
        overrides["block_size"] = cfg.block_size
    if cfg.random_blocks is not None:
        overrides["num_random_blocks"] = cfg.random_blocks
    return base.replace(**overrides)


def forward_gflop(config: SDBertConfig, batch: int, seq_len: int, attention: str) -> float:
    """Matrix-product GFLOP of one forward pass (embeddings, norms, softmax and the head left out)."""
    h, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    dense_part = 2 * batch * seq_len * (4 * h * h + 2 * h * inter)  # q, k, v, output; the two FFN matrices
    num_blocks = -(-seq_len // config.block_size)
    if attention == "full" or num_blocks <= dense_fallback_blocks(config.num_random_blocks):
        pairs = seq_len * seq_len  # the sparse path runs dense attention on short inputs too
    else:
        layout = bigbird_block_layout(num_blocks, config.num_random_blocks, num_heads=config.num_attention_heads)
        pairs = layout.sum().item() * config.block_size**2 / config.num_attention_heads  # mean over heads
    attention_part = 4 * batch * pairs * h  # scores and output, every head: 2 * 2 * pairs * head_dim * heads
    return layers * (dense_part + attention_part) / 1e9


def run_encoder_bench(cfg: EncoderBenchConfig, progress: bool = True) -> dict:
    torch.set_num_threads(cfg.threads)
    record = provenance(command_line(cfg))
    config = encoder_config(cfg)
    torch.manual_seed(0)
    sparse = SDBertForSequenceClassification(config).eval()
    full = SDBertForSequenceClassification(config.replace(attention_type="full")).eval()
    full.load_state_dict(sparse.state_dict())  # the same weights: only the attention differs
    models = {"block_sparse": sparse, "full": full}
    rows = [_time_length(models, config, cfg, seq_len) for seq_len in _progress(cfg.lengths, progress)]
    record.update(benchmark="encoder", config=asdict(cfg), calibration=gemm_calibration(),
                  model={"source": cfg.model or f"--size {cfg.size}", "hidden_size": config.hidden_size,
                         "layers": config.num_hidden_layers, "heads": config.num_attention_heads,
                         "intermediate_size": config.intermediate_size, "block_size": config.block_size,
                         "random_blocks": config.num_random_blocks, "parameters": sparse.num_parameters()},
                  rows=rows)
    return finish(record)


def _progress(lengths, progress: bool):
    return tqdm(lengths, desc="bench encoder", unit="length", disable=not progress)


def _time_length(models: dict, config: SDBertConfig, cfg: EncoderBenchConfig, seq_len: int) -> dict:
    """Both attentions on the same ids, interleaved round by round."""
    ids = torch.randint(0, config.vocab_size, (cfg.batch, seq_len), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        times = interleaved_rounds({name: (lambda m=model: m(ids)) for name, model in models.items()},
                                   rounds=cfg.repeats, warmup=cfg.warmup)
    gc.collect()
    flops = {name: forward_gflop(config, cfg.batch, seq_len, name) for name in models}
    stats = {name: spread(t) for name, t in times.items()}
    return {"length": seq_len, "median_s": {name: s["median"] for name, s in stats.items()}, "spread_s": stats,
            "times_s": times, "gflop": flops,
            "gflop_per_s": {name: flops[name] / stats[name]["median"] for name in models},
            "speedup": speedup(times["full"], times["block_sparse"]),
            "flop_bound": flops["full"] / flops["block_sparse"]}


def command_line(cfg: EncoderBenchConfig) -> str:
    parts = ["sdbert bench encoder"]
    parts += [f"--model {cfg.model}"] if cfg.model else [f"--size {cfg.size}"]
    parts += [f"--lengths {','.join(map(str, cfg.lengths))}", f"--batch {cfg.batch}", f"--repeats {cfg.repeats}",
              f"--threads {cfg.threads}"]
    if cfg.block_size is not None:
        parts.append(f"--block-size {cfg.block_size}")
    if cfg.random_blocks is not None:
        parts.append(f"--random-blocks {cfg.random_blocks}")
    return " ".join(parts)


# --- the `sdbert bench encoder` command ---------------------------------------------------------



def add_arguments(p) -> None:
    add_config_arguments(p, EncoderBenchConfig)
    add_output_arguments(p, "encoder")


def run_from_args(args) -> dict:
    return run_encoder_bench(bench_config(EncoderBenchConfig, args), progress=args.progress)


def _seconds(stats: dict) -> str:
    return f"{stats['median']:.3f} ({stats['min']:.3f}-{stats['max']:.3f})"


def table(result: dict) -> tuple[list[str], list[list]]:
    calibration = result["calibration"]
    header = ["n", "block-sparse s (min-max)", "full s (min-max)", "speed-up full/sparse", "FLOP bound",
              "GFLOP sparse", "GFLOP full", "sparse % of GEMM peak", "full % of GEMM peak"]
    rows = []
    for row in result["rows"]:
        rate = row["gflop_per_s"]
        rows.append([row["length"], _seconds(row["spread_s"]["block_sparse"]), _seconds(row["spread_s"]["full"]),
                     speedup_text(row["speedup"]), f"{row['flop_bound']:.2f}", f"{row['gflop']['block_sparse']:.0f}",
                     f"{row['gflop']['full']:.0f}", f"{percent_of_peak(rate['block_sparse'], calibration):.0f}%",
                     f"{percent_of_peak(rate['full'], calibration):.0f}%"])
    return header, rows


def _shape(result: dict) -> str:
    m = result["model"]
    return (f"{m['source']}: {m['layers']} layers, hidden {m['hidden_size']}, {m['heads']} heads, FFN "
            f"{m['intermediate_size']}, block {m['block_size']}, {m['random_blocks']} random blocks, "
            f"{m['parameters'] / 1e6:.1f}M parameters; batch {result['config']['batch']}")


def text_report(result: dict) -> str:
    return "\n".join([_shape(result), text_table(*table(result))])


def markdown_report(result: dict) -> str:
    machine = result["machine"]
    return "\n".join([
        f"## Whole encoder, block-sparse vs full attention (`sdbert bench encoder`): {result['model']['source']}",
        "",
        f"Machine: {describe_machine(machine)}.",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Model: {_shape(result)}. The same random weights run with each attention; forward passes in fp32 under "
        f"`torch.inference_mode()`, median (min-max) of {result['config']['repeats']} interleaved rounds after "
        f"{result['config']['warmup']} warm-up. Measured GEMM peak of this run: "
        f"{result['calibration']['square_gflops']:.0f} GFLOP/s (fp32 {result['calibration']['square_size']}^2 "
        "matmul, 2 FLOPs per multiply-add). " + kernel_text(result) + " "
        "\"FLOP bound\" is the ratio of the two passes' matrix-product GFLOP: the speed-up if every product ran "
        "at the same rate. The projections and feed-forward layers cost the same under both attentions, so "
        "no attention kernel can exceed it.",
        "",
        markdown_table(*table(result)),
    ])
