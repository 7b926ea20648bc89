"""`evaluate(EvaluateConfig)`: a saved classifier's accuracy, F1, confusion matrix and throughput on a
labelled split, written beside the model (`sdbert evaluate` maps its flags to the config).

    from sdbert.evaluation import EvaluateConfig, evaluate
    metrics, path = evaluate(EvaluateConfig(model="runs/student", data=DataSettings(source="imdb.tar.gz")))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sdbert.classifier import Classifier
from sdbert.cli_args import arg, positive_int
from sdbert.data import load_split, resolve_source, stratified_subset
from sdbert.errors import ConfigError
from sdbert.io import write_json
from sdbert.precision import PRECISION_HELP, Precision
from sdbert.training.loop import evaluate as evaluate_examples
from sdbert.training.setup import DataSettings


@dataclass
class EvaluateConfig:
    """One evaluation; the fields with help are `sdbert evaluate`'s flags (the data flags are `data`'s)."""

    model: str = arg(help="model folder (PyTorch, or an ONNX export), or a hub name org/name", metavar="DIR")
    backend: Literal["auto", "torch", "onnx"] = arg(
        "auto", "auto: onnxruntime when the folder holds model.onnx, else PyTorch")
    threads: int | None = arg(None, "intra-op threads of the model (default: all cores)", type=positive_int)
    split: str = arg("test", "split to evaluate")
    limit: int | None = arg(None, "a seeded stratified subset of N examples", type=positive_int, metavar="N")
    seed: int = arg(42, "seed of the --limit subset")
    max_length: int | None = arg(None, "tokens per text (default: as trained)", type=positive_int)
    batch_size: int = arg(64, "texts per forward pass", type=positive_int)
    precision: Precision = arg("auto", PRECISION_HELP)
    output_json: str | None = arg(None, "where to write the metrics (default: MODEL/eval_<split>.json; for a hub "
                                  "name ./eval_<split>.json)", metavar="FILE")
    progress: bool = arg(True, "no progress bar", negate=True)
    data: DataSettings = field(default_factory=DataSettings)
    """where the examples come from; its truncation, left at head+tail, means "as the model was trained\""""
    revision: str | None = None
    """the hub revision of a hub-name `model`"""


def evaluate(config: EvaluateConfig) -> tuple[dict, Path]:
    """The metrics (also written as JSON) and the file they were written to."""
    classifier = Classifier.from_pretrained(config.model, backend=config.backend, threads=config.threads,
                                            revision=config.revision, precision=config.precision)
    metrics = _metrics(classifier, config)
    out = Path(config.output_json or _results_folder(config.model) / f"eval_{config.split}.json")
    write_json(out, metrics)
    return metrics, out


def _metrics(classifier, config: EvaluateConfig) -> dict:
    data = config.data
    source = resolve_source(data.source, progress=data.progress)
    split = None if source.kind == "table" else config.split  # a single file is what to evaluate, whole
    dataset = load_split(source, split, text_column=data.text_column, label_column=data.label_column,
                         id2label=classifier.config.id2label, errors=data.encoding_errors, progress=data.progress)
    if dataset.labels is None:
        raise ConfigError(f"split {config.split!r} has no labels to evaluate against")
    if config.limit and config.limit < len(dataset):
        dataset = stratified_subset(dataset, config.limit, seed=config.seed)
    max_length = classifier.max_length(config.max_length)
    truncation = data.truncation if data.truncation != "head+tail" else classifier.settings.truncation
    encoded = classifier.encode_dataset(dataset, max_length=max_length, truncation=truncation)
    precision = classifier.resolved_precision()
    metrics = evaluate_examples(classifier.model, encoded, batch_size=config.batch_size, progress=config.progress,
                                desc="evaluate", precision=precision)
    metrics.update(split=config.split if split else f"{source.path.name} (the whole file)", model=str(config.model),
                   max_length=max_length, truncation=truncation, truncated=encoded.truncation_report(),
                   backend=classifier.backend, precision=precision.record())
    if getattr(classifier.model, "quantization", None):
        metrics["quantization"] = classifier.model.quantization
    return metrics


def _results_folder(model: str) -> Path:
    """The model's folder (or an ONNX file's); for a hub name the working directory, not the hub's cache."""
    path = Path(model)
    if not path.exists():
        return Path(".")
    return path if path.is_dir() else path.parent
