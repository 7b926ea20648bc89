"""`report.md` and the accuracy-against-time plot of a `sdbert reproduce` run, from its results."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from sdbert.errors import missing_hint
from sdbert.io import write_json, write_text
from sdbert.paper.table import PAPER, claims
from sdbert.reporting import update_markdown_section

logger = logging.getLogger(__name__)


def _machine(hw: dict) -> str:
    return hw.get("gpu") or f"{hw['cpu']} ({hw['cpu_count']} cores, {hw['torch_threads']} torch threads)"


def _header(results: dict, level: int) -> list[str]:
    data, hw = results["data"], results["hardware"]
    return [f"{'#' * level} SDBERT Table 1 reproduction: preset `{results['preset']}`", "",
            f"Hardware: {_machine(hw)}; torch {hw['torch']}. Wall time {results['wall_seconds'] / 60:.1f} min"
            + (f" over {len(results['wall_calls'])} calls" if len(results.get("wall_calls", [])) > 1 else "")
            + (f"; 1-minute load average {hw['load_average_start']} at the start, {hw['load_average_end']} at the end"
               if "load_average_start" in hw else "") + ".", "",
            f"Data: {data['train_examples']:,} training reviews for the teachers "
            f"({data.get('student_train_examples', data['train_examples']):,} of them for the students), "
            f"{data['validation_examples']:,} validation, {data['test_examples']:,} test reviews (the same seeded "
            f"stratified subset for every system), {data['unlabeled_examples']:,} unlabelled reviews in the KD "
            f"transfer set{_augmented(results['settings'])}. "
            f"Students: `{results['settings']['student_init']}` initialisation, "
            f"{results['settings']['student_seeds']} seed(s) each, the same initial weights for KD and no-KD.", ""]


def _augmented(settings: dict) -> str:
    copies = settings.get("augment_copies")
    return f" with {copies} augmented cop{'y' if copies == 1 else 'ies'} of each student review" if copies else ""


def _accuracy_cell(row: dict) -> str:
    low, high = row.get("accuracy_interval", (None, None))
    spread = f" ± {row['accuracy_std']:.4f}" if row.get("seeds", 1) > 1 else ""
    interval = f" [{low:.3f}, {high:.3f}]" if low is not None else ""
    return f"{row['accuracy']:.4f}{spread}{interval}"


def _time_cell(row: dict) -> str:
    if "teacher_logits_seconds" in row and row["teacher_logits_seconds"] is None:
        return f"{row['train_seconds']:.0f} s training + teacher logits (cost unknown: read from another run's cache)"
    if row.get("teacher_logits_seconds") is None:
        return f"{row['train_seconds']:.0f} s"
    return (f"{row['total_seconds']:.0f} s ({row['train_seconds']:.0f} s training + "
            f"{row['teacher_logits_seconds']:.0f} s teacher logits)")


def _rows_table(results: dict) -> list[str]:
    intro = ("Accuracy: mean ± standard deviation over seeds, [95% Wilson interval over the test reviews]. "
             "Time: what a user pays, the KD student's teacher-logit pass included.")
    size = "size (MB)"  # the model folder, in results from before the weights' sizes were recorded
    weights = any(row.get("weights_mb") is not None for row in results["rows"])
    if weights:
        intro += " Weights: MiB in fp32 / with every matrix in int8 (as `export --quantize int8` stores them)."
        size = "weights fp32 / int8 (MiB)"
    lines = [intro, "", f"| system | accuracy | paper accuracy | time | paper time | parameters | {size} | "
                        "test examples/s |", "|---|---|---|---|---|---|---|---|"]
    for row in results["rows"]:
        paper_acc, paper_min = PAPER.get(row["system"], (None, None))
        lines.append(f"| {row['system']} | {_accuracy_cell(row)} | "
                     f"{'' if paper_acc is None else f'{paper_acc / 100:.3f}'} | {_time_cell(row)} | "
                     f"{'' if paper_min is None else f'{paper_min} min'} | {row['parameters'] / 1e6:.1f}M | "
                     f"{_size_cell(row, weights)} | {row['examples_per_second']} |")
    return lines


def _size_cell(row: dict, weights: bool) -> str:
    if weights:
        return "" if row.get("weights_mb") is None else f"{row['weights_mb']} / {row['weights_mb_int8']}"
    return f"{row.get('size_mb') or ''}"


def _runs_table(results: dict) -> list[str]:
    lines = ["", "Every run:", "", "| system | seed | accuracy | 95% Wilson interval | train time | validation |",
             "|---|---|---|---|---|---|"]
    for row in results["rows"]:
        for run in row.get("runs", []):
            low, high = run["accuracy_interval"]
            lines.append(f"| {row['system']} | {run['seed']} | {run['accuracy']:.4f} | [{low:.4f}, {high:.4f}] | "
                         f"{run['train_seconds']:.0f} s | {run['validation_accuracy']:.4f} |")
    return lines


def _comparisons_table(results: dict) -> list[str]:
    lines = ["", "Paired comparisons on the same test reviews (A minus B; bootstrap over reviews, 10,000 draws, "
             "seeds averaged per review, so the interval is test-sampling noise for these seeds and the ± column "
             "above is the seed-to-seed spread; exact McNemar per seed pair):", "",
             "| comparison | A - B | 95% interval | McNemar p | verdict |", "|---|---|---|---|---|"]
    for name, c in results.get("comparisons", {}).items():
        low, high = c["interval_points"]
        verdict = {"A better": f"{c['a']} better", "B better": f"{c['b']} better"}.get(c["verdict"], c["verdict"])
        lines.append(f"| {name.replace('_', ' ')} ({c['a']} - {c['b']}) | {c['difference_points']:+.2f} points | "
                     f"[{low:+.2f}, {high:+.2f}] | {', '.join(p_value(p) for p in c['mcnemar_p'])} | {verdict} |")
    return lines


def render_report(results: dict, level: int = 1) -> str:
    """The report of a run; `level` is its title's heading level (2 inside BENCHMARKS.md)."""
    lines = _header(results, level) + _rows_table(results) + _runs_table(results) + _comparisons_table(results)
    lines += ["", "Ratios that carry the paper's claims (ours / paper's):", "", "| claim | ours | paper |",
              "|---|---|---|"]
    lines += [f"| {name.replace('_', ' ')} | {ours} | {paper} |"
              for name, (ours, paper) in claims(results["rows"]).items()]
    settings = results["settings"]
    teacher = settings["teacher_init"] or f"a randomly initialised {settings['teacher_size']} model"
    baseline_data = ("every training review not held out for validation." if settings.get("baseline_train", "pool")
                     == "pool" else "the preset's own training reviews.")
    lines += ["", "Settings:", "", "```json", json.dumps(results["settings"], indent=2), "```", "",
              f"What differs from the paper: the teacher here is `{teacher}` rather than BigBird-RoBERTa-base, "
              "trained on a subset of IMDb at a shorter length on this hardware; the paper's times are GPU minutes "
              "on the full data. The TF-IDF row is trained on " + baseline_data]
    return "\n".join(lines) + "\n"


def _pyplot():
    """matplotlib's pyplot on a file-only backend, or None (with a one-line hint) when the extra is missing."""
    try:
        # optional extra [plot]: without it the plot is skipped
        import matplotlib

        matplotlib.use("Agg")
        # optional extra [plot]: without it the plot is skipped
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("no plot: %s", missing_hint("matplotlib", "the plots"))
        return None
    return plt


def plot(results: dict, path: Path) -> bool:
    """Accuracy (95% Wilson interval as the error bar, each seed as a dot) against the time a user pays."""
    plt = _pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.4))
    for index, row in enumerate(results["rows"]):
        minutes, color = (row.get("total_seconds") or row["train_seconds"]) / 60, f"C{index}"
        low, high = row.get("accuracy_interval", (row["accuracy"], row["accuracy"]))
        ax.errorbar(minutes, row["accuracy"], yerr=[[row["accuracy"] - low], [high - row["accuracy"]]], fmt="o",
                    color=color, capsize=4, label=row["system"])
        seeds = [run["accuracy"] for run in row.get("runs", [])]
        if len(seeds) > 1:
            ax.scatter([minutes] * len(seeds), seeds, s=12, color=color, alpha=0.5, marker="x")
    ax.set_xlabel("time a user pays (minutes; KD includes the teacher-logit pass)")
    ax.set_ylabel("test accuracy (95% interval)")
    ax.set_title(f"SDBERT Table 1, preset {results['preset']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")  # a legend, not annotations: nearby points do not overprint
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def loss_curves(output: Path) -> dict[str, list[tuple[int, float]]]:
    """(step, training loss) of every run in a reproduce folder, from its `metrics.jsonl`, by run name."""
    curves = {}
    for log in sorted(output.glob("*/metrics.jsonl")) + sorted(output.glob("*/seed_*/metrics.jsonl")):
        records = (json.loads(line) for line in log.read_text().splitlines() if line.strip())
        points = [(r["step"], r["loss"]) for r in records if "loss" in r and "step" in r]
        if points:
            curves[str(log.parent.relative_to(output))] = points
    return curves


def plot_loss_curves(output: Path, path: Path) -> bool:
    """Training loss against optimizer step, one line per run (students per seed)."""
    curves = loss_curves(output)
    plt = _pyplot() if curves else None
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.4))
    for name, points in curves.items():
        steps, losses = zip(*points, strict=True)
        ax.plot(steps, losses, label=name, linewidth=1.2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (mean over the logged window)")
    ax.set_title(f"Training curves: {output.name}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_outputs(results: dict, output: Path) -> None:
    write_json(output / "results.json", results)
    write_text(output / "report.md", render_report(results))
    plot(results, output / "accuracy_vs_time.png")
    plot_loss_curves(output, output / "loss_curves.png")


def publish(output: Path, folder: Path) -> str:
    """Copy a finished run's results and plot into `folder` as `table1_<preset>.*` and render its
    BENCHMARKS.md section from them (what `tools/bench_verify.py` re-checks). Returns the section name."""
    results = json.loads((output / "results.json").read_text())
    name = f"table1_{results['preset']}"
    write_json(folder / f"{name}.json", results)
    if (output / "accuracy_vs_time.png").is_file():
        shutil.copyfile(output / "accuracy_vs_time.png", folder / f"{name}.png")
    update_markdown_section(folder / "BENCHMARKS.md", name, render_report(results, level=2))
    return name


def p_value(p: float) -> str:
    """A p-value as stored (rounded to 4 decimals): 0 there means below 0.0001, not zero."""
    return "<0.0001" if p < 1e-4 else f"{p:.3g}"
