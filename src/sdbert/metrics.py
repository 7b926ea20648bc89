"""Classification metrics without a scikit-learn dependency."""

from __future__ import annotations

import numpy as np


def classification_metrics(predictions, labels, num_labels: int, id2label: dict[int, str] | None = None) -> dict:
    """Accuracy, macro F1 (the unweighted mean of the classes' F1) and the confusion matrix (`[true][predicted]`
    counts, rows and columns in `labels` order, named by `id2label` when given)."""
    predictions = np.asarray(predictions, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    confusion = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    true_pos = np.diag(confusion).astype(float)
    precision = np.divide(true_pos, confusion.sum(0), out=np.zeros(num_labels), where=confusion.sum(0) > 0)
    recall = np.divide(true_pos, confusion.sum(1), out=np.zeros(num_labels), where=confusion.sum(1) > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(num_labels), where=denom > 0)
    return {
        "accuracy": float(true_pos.sum() / max(1, len(labels))),
        "f1": float(f1.mean()),
        "f1_average": "macro",
        "confusion_matrix": confusion.tolist(),
        "labels": [(id2label or {}).get(i, str(i)) for i in range(num_labels)],
    }
