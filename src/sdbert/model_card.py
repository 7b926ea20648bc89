"""Model cards: the `README.md` of every model folder sdbert writes, in the hub's convention (a YAML
header with `library_name`, `tags`, `datasets`, `metrics` and `model-index`, then prose). The card is
written from the run's own JSON (`config.json`, plus `summary.json` of train/distill or `result.json`
of a reproduce run), so it states only what was measured, with its interval.

    from sdbert.model_card import write_model_card
    write_model_card("runs/student")                  # reads the folder's config.json and summary.json
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from sdbert import __version__
from sdbert.checkpoint import read_config
from sdbert.io import write_text
from sdbert.stats import wilson_interval

CardFormat = Literal["sdbert", "hf_custom", "hf_stock", "onnx"]
RUN_FILES = ("result.json", "summary.json")  # a reproduce run's test score first, else train/distill's


def read_run(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The run record a model folder holds (empty when it holds none, e.g. a hub checkpoint)."""
    for name in RUN_FILES:
        path = Path(folder) / name
        if path.is_file():
            return json.loads(path.read_text())
    return {}


def evaluation(run: dict[str, Any]) -> dict[str, Any] | None:
    """The accuracy a run measured, on which split, over how many texts, with its 95% Wilson interval."""
    if "accuracy" in run and "eval_examples" in run:  # reproduce: scored on held-out test reviews
        correct, total, split = round(run["accuracy"] * run["eval_examples"]), run["eval_examples"], "test"
    elif run.get("validation", {}).get("examples"):
        best = run["validation"]
        correct, total, split = round(best["accuracy"] * best["examples"]), best["examples"], "validation"
    else:
        return None
    low, high = wilson_interval(correct, total)
    return {"split": split, "accuracy": correct / total, "examples": total, "interval": (low, high)}


def dataset_id(run: dict[str, Any]) -> str | None:
    """`imdb` when the run trained on IMDb (the archive, its folder or the download), else None."""
    source = str(run.get("data", {}).get("source") or "")
    return "imdb" if source == "imdb" or "aclimdb" in source.lower() else None


def metadata(config: dict[str, Any], run: dict[str, Any], name: str) -> list[str]:
    """The YAML header's lines; values are JSON, which YAML reads as flow scalars and sequences."""
    tags = ["sdbert", "text-classification", "block-sparse-attention" if sparse(config) else "full-attention"]
    if distilled(run):
        tags.append("knowledge-distillation")
    lines = ["library_name: sdbert", f"tags: {json.dumps(tags)}", "pipeline_tag: text-classification"]
    dataset, scored = dataset_id(run), evaluation(run)
    if dataset:
        lines.append(f"datasets: {json.dumps([dataset])}")
    if scored:
        lines.append('metrics: ["accuracy"]')
        lines.append(f"model-index: {json.dumps([model_index(name, dataset, scored)])}")
    return ["---", *lines, "---"]


def distilled(run: dict[str, Any]) -> bool:
    """A distill run that learnt from its teacher (at `--alpha 1` the teacher only lent its tokenizer), or a
    reproduce KD run."""
    if "alpha" in run:
        return run.get("teacher_mode") != "none"
    return "kd" in str(run.get("run_spec", {}).get("loss", ""))


def model_index(name: str, dataset: str | None, scored: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "results": [{
        "task": {"type": "text-classification", "name": "Text Classification"},
        "dataset": {"type": dataset or "custom", "name": "IMDb" if dataset == "imdb" else "custom",
                    "split": scored["split"]},
        "metrics": [{"type": "accuracy", "value": round(scored["accuracy"], 4),
                     "name": f"accuracy ({scored['examples']} {scored['split']} texts)"}]}]}


def sparse(config: dict[str, Any]) -> bool:
    return config.get("attention_type") == "block_sparse"


def architecture(config: dict[str, Any]) -> str:
    layers, heads, width = (config.get(k) for k in ("num_hidden_layers", "num_attention_heads", "hidden_size"))
    attention = (f"block-sparse attention (BigBird layout: block {config.get('block_size')}, "
                 f"{config.get('num_random_blocks')} random blocks per query block; global and sliding-window "
                 f"blocks; cost linear in length)" if sparse(config) else "full attention")
    pooling = "the mean of its tokens" if config.get("classifier_pooling") == "mean" else "the first token"
    labels = ", ".join(str(v) for v in (config.get("id2label") or {}).values())
    tables = f" in {config['embedding_size']}-wide factorised tables" if config.get("embedding_size") else ""
    vocabulary = f" Its vocabulary holds {config['vocab_size']:,} tokens{tables}." if config.get("vocab_size") else ""
    return (f"A {layers}-layer, {heads}-head, {width}-wide transformer encoder with {attention}, classifying "
            f"from {pooling} ({config.get('pooler_activation', 'tanh')} pooler) into: {labels}.{vocabulary} "
            f"It reads up to "
            f"{config.get('max_length') or config.get('max_position_embeddings')} tokens per text "
            f"(truncation: {config.get('truncation', 'head+tail')}).")


def usage(name: str, fmt: CardFormat) -> list[str]:
    """How to load this folder: in sdbert always; in `transformers` for the Hugging Face exports."""
    lines = ["## How to use", "", "```bash", f'echo "A slow start, but the last hour is wonderful." | '
             f"sdbert predict --model {name}", f"sdbert evaluate --model {name} --data aclImdb_v1.tar.gz", "```"]
    if fmt == "sdbert":
        lines += ["", "```python", "from sdbert import Classifier",
                  f'clf = Classifier.from_pretrained("{name}")  # model, tokenizer and inference settings',
                  'clf(["A slow start, but the last hour is wonderful."])', "```",
                  "", f"`sdbert export --model {name} --format hf` makes a folder `transformers` loads."]
    elif fmt in ("hf_custom", "hf_stock"):
        remote = ", trust_remote_code=True" if fmt == "hf_custom" else ""
        lines += ["", "```python", "from transformers import pipeline",
                  f'clf = pipeline("text-classification", model="{name}"{remote})',
                  'clf("A slow start, but the last hour is wonderful.", truncation=True)', "```"]
        if fmt == "hf_custom":
            lines += ["", "`trust_remote_code=True` runs `modeling_sdbert.py` from this folder (pure PyTorch)."]
    else:
        lines += ["", "The graph (`model.onnx`) runs in onnxruntime: `sdbert serve --model " + name + "`."]
    return lines


def training(config: dict[str, Any], run: dict[str, Any]) -> list[str]:
    """Where it started, what it saw and how it was trained, from the run record."""
    lines = ["## Training", ""]
    if not run:
        return lines + ["This folder holds no run record (`summary.json` or `result.json`): how it was trained "
                        "is not known to sdbert."]
    start = config.get("init_checkpoint")
    lines.append(f"- Started from: {start or 'random weights'}")
    data = run.get("data", {})
    if data:
        lines.append(f"- Data: {data.get('source')}; {data.get('train_examples')} training and "
                     f"{data.get('validation_examples')} validation texts")
    lines += [f"- {key.replace('_', ' ').capitalize()}: {value}" for key, value in run.get("settings", {}).items()]
    spec = run.get("run_spec", {})
    lines += [f"- {key.replace('_', ' ').capitalize()}: {spec[key]}" for key in (
        "loss", "epochs", "learning_rate", "max_steps", "seed", "precision", "attention_dropout", "hidden_dropout")
        if key in spec]
    lines += recipe(run)
    if "alpha" in run:
        loss = (f"alpha * cross-entropy + (1 - alpha) * {run.get('kind')} distillation, alpha = {run['alpha']}"
                if distilled(run) else "cross-entropy on the labels (alpha = 1: no distillation term)")
        lines.append(f"- Loss: {loss}")
    return lines


def recipe(run: dict[str, Any]) -> list[str]:
    """The number format the steps ran in (and why) and the dropout, from a train/distill summary."""
    lines = []
    choice = run.get("precision")
    if isinstance(choice, dict) and "precision" in choice:
        lines.append(f"- Precision: {choice['precision']} ({choice.get('reason', 'asked for')})")
    dropout = run.get("dropout")
    if isinstance(dropout, dict):
        lines.append(f"- Dropout: hidden states {dropout.get('hidden')}, attention probabilities "
                     f"{dropout.get('attention')}")
    return lines


def results(run: dict[str, Any]) -> list[str]:
    scored = evaluation(run)
    if scored is None:
        return ["## Evaluation", "", "Not evaluated by sdbert: run `sdbert evaluate` on your test data."]
    low, high = scored["interval"]
    line = (f"Accuracy **{scored['accuracy']:.4f}** (95% Wilson interval {low:.4f}-{high:.4f}) on "
            f"{scored['examples']} {scored['split']} texts.")
    if scored["split"] == "validation":
        line += (" These texts also chose the best checkpoint, so the figure is optimistic: "
                 "measure on held-out test data with `sdbert evaluate`.")
    return ["## Evaluation", "", line]


def speed(run: dict[str, Any]) -> list[str]:
    parts = [f"{run[k]} {label}" for k, label in (("train_seconds", "s of training"),
                                                    ("teacher_logits_seconds", "s of teacher-logit pass"),
                                                    ("examples_per_second", "examples/s"),
                                                    ("parameters", "parameters")) if run.get(k) is not None]
    if not parts:
        return []
    return ["## Speed and size", "", "; ".join(parts) + " (on the machine that trained it; see "
            "`benchmarks/BENCHMARKS.md` of sdbert for measured speed-ups)."]


LIMITATIONS = [
    "## Limitations", "",
    "- Trained for sentiment of English movie reviews when the data is IMDb; other domains need new data.",
    "- Not the paper's setting unless trained with `sdbert reproduce --preset paper`: the smaller presets "
    "start from all-MiniLM-L6-v2, train on a few thousand reviews and read 256-512 tokens, where the paper "
    "fine-tunes BigBird-RoBERTa-base on 25,000 reviews at 4,096 tokens.",
    "- Block-sparse attention runs dense below (5 + 2r) x block tokens; Hugging Face's own BigBird samples "
    "random blocks differently, so only this folder's code gives exactly these logits.",
]


def render(config: dict[str, Any], run: dict[str, Any], name: str, fmt: CardFormat = "sdbert") -> str:
    sections = [metadata(config, run, name), [f"# {name}", "", architecture(config),
                f"Written by sdbert {__version__}."], usage(name, fmt), training(config, run), results(run),
                speed(run), LIMITATIONS]
    return "\n".join("\n".join(section) + "\n" for section in sections if section)


def write_model_card(folder: str | os.PathLike[str], run: dict[str, Any] | None = None,
                     fmt: CardFormat = "sdbert", config: dict[str, Any] | None = None) -> Path:
    """Write `folder/README.md` from `config` (default: its `config.json`; an export passes the source
    model's, whose fields are ours) and `run` (default: the folder's own run record)."""
    folder = Path(folder)
    config = read_config(folder) if config is None else config
    path = folder / "README.md"
    write_text(path, render(config, read_run(folder) if run is None else run, folder.name, fmt))
    return path
