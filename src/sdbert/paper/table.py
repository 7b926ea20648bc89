"""Table 1 from the runs of `sdbert reproduce`: rows, paired comparisons, report and plot.

A row is one system: the mean and standard deviation of its accuracy over student seeds (one run
for a teacher) and a 95% Wilson interval for each run. A comparison pairs two systems on the
same test reviews: the accuracy difference with a bootstrap interval over reviews and the exact
McNemar p-value of each seed's pair. A difference whose interval contains 0 is "within noise".
"""

from __future__ import annotations

import logging

import numpy as np

from sdbert.stats import disagreements, mcnemar_exact, paired_bootstrap, wilson_interval

logger = logging.getLogger(__name__)

SYSTEMS = ("full_teacher", "sparse_teacher", "sparse_student_kd", "sparse_student_no_kd")
PAPER = {  # Table 1 of the paper: accuracy (%), training time (minutes)
    "full_teacher": (93.3, 132.4),
    "sparse_teacher": (90.6, 115.5),
    "sparse_student_kd": (87.9, 46.74),
    "sparse_student_no_kd": (70.3, 16.77),
}
COMPARISONS = {  # claim: (system A, system B), reported as A minus B
    "kd_vs_no_kd": ("sparse_student_kd", "sparse_student_no_kd"),
    "sparse_vs_full_teacher": ("sparse_teacher", "full_teacher"),
}
RUN_FIELDS = ("seed", "accuracy", "accuracy_interval", "train_seconds", "validation_accuracy",
              "initial_weights_sha256")


def _mean(runs: list[dict], key: str) -> float:
    return float(np.mean([run[key] for run in runs]))


def aggregate(system: str, runs: list[dict]) -> dict:
    """One row from a system's runs (the KD rows also carry the teacher-logit pass they need)."""
    first, n = runs[0], runs[0]["eval_examples"]
    accuracies = [run["accuracy"] for run in runs]
    mean = float(np.mean(accuracies))
    low, high = wilson_interval(round(mean * n), n)
    row = {"system": system, "accuracy": round(mean, 4),
           "accuracy_std": round(float(np.std(accuracies, ddof=1)) if len(runs) > 1 else 0.0, 4),
           "accuracy_interval": [round(low, 4), round(high, 4)], "seeds": len(runs),
           "train_seconds": round(_mean(runs, "train_seconds"), 1), "parameters": first["parameters"],
           "size_mb": first.get("size_mb"), "eval_examples": n, "train_examples": first["train_examples"],
           "examples_per_second": round(_mean(runs, "examples_per_second"), 2),
           "validation_accuracy": round(_mean(runs, "validation_accuracy"), 4),
           "attention_type": first["attention_type"], "layers": first["layers"], "heads": first["heads"]}
    row["total_seconds"] = row["train_seconds"]
    if "teacher_logits_seconds" in first:
        logits = first["teacher_logits_seconds"]
        row.update(teacher_logits_seconds=logits, transfer_examples=first["transfer_examples"],
                   total_seconds=None if logits is None else round(row["train_seconds"] + logits, 1))
    row["runs"] = [{key: run.get(key) for key in RUN_FIELDS} for run in runs]
    return row


def correctness(runs: list[dict], labels) -> np.ndarray:
    """`(runs, reviews)` booleans: which test reviews each run classified correctly."""
    labels = np.asarray(labels)
    return np.stack([np.asarray(run["test_predictions"]) == labels for run in runs])


def paired_comparison(runs_a: list[dict], runs_b: list[dict], labels) -> dict:
    """A minus B on the same reviews; runs are paired by position (seed order)."""
    a, b = correctness(runs_a, labels), correctness(runs_b, labels)
    difference, low, high = paired_bootstrap(a, b)
    pairs = [disagreements(x, y) for x, y in zip(a, b, strict=False)]
    verdict = "within noise" if low <= 0 <= high else ("A better" if low > 0 else "B better")
    return {"difference_points": round(100 * difference, 2),
            "interval_points": [round(100 * low, 2), round(100 * high, 2)],
            "only_a_correct": [p[0] for p in pairs], "only_b_correct": [p[1] for p in pairs],
            "mcnemar_p": [round(mcnemar_exact(*p), 4) for p in pairs], "verdict": verdict}


def compare(runs: dict[str, list[dict]], labels) -> dict:
    out = {}
    for claim, (a, b) in COMPARISONS.items():
        if runs.get(a) and runs.get(b):
            out[claim] = {"a": a, "b": b, **paired_comparison(runs[a], runs[b], labels)}
    return out


def _ratio(a, b):
    return None if not a or not b else round(a / b, 3)


def claims(rows: list[dict]) -> dict:
    """The ratios that carry the paper's claims, (ours, the paper's). KD time includes the teacher logits."""
    by = {row["system"]: row for row in rows}
    ft, st, kd, nokd = (by.get(s, {}) for s in SYSTEMS)
    return {
        "student_over_teacher_parameters": (_ratio(kd.get("parameters"), st.get("parameters")), round(51 / 127, 3)),
        "kd_student_over_sparse_teacher_accuracy": (_ratio(kd.get("accuracy"), st.get("accuracy")),
                                                    _ratio(87.9, 90.6)),
        "kd_over_no_kd_total_time": (_ratio(kd.get("total_seconds"), nokd.get("total_seconds")),
                                     _ratio(46.74, 16.77)),
        "sparse_over_full_teacher_train_time": (_ratio(st.get("train_seconds"), ft.get("train_seconds")),
                                                _ratio(115.5, 132.4)),
        "kd_student_over_teacher_train_time": (_ratio(kd.get("total_seconds"), st.get("train_seconds")),
                                               _ratio(46.74, 115.5)),
    }
