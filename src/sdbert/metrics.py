"""Classification metrics without a scikit-learn dependency."""

from __future__ import annotations

import numpy as np


def classification_metrics(predictions, labels, num_labels: int) -> dict:
    """Accuracy, macro F1 and the confusion matrix (`[true][predicted]` counts)."""
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
        "confusion_matrix": confusion.tolist(),
    }
