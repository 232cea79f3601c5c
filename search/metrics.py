"""Metrics a task can be scored by: label metrics, and label-free fidelity to the fp32 model.

All take model outputs (logits, or any output for `cosine`) and return one number, higher
being better, so every metric is an objective to maximize.
"""

from __future__ import annotations

import numpy as np

LABEL_METRICS = ("accuracy", "macro_f1", "mcc")
FIDELITY_METRICS = ("agreement", "cosine")
METRICS = LABEL_METRICS + FIDELITY_METRICS


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(predictions == labels))


def macro_f1(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Unweighted mean of per-class F1 over the classes present in labels or predictions."""
    scores = []
    for c in np.union1d(labels, predictions):
        tp = np.sum((predictions == c) & (labels == c))
        fp = np.sum((predictions == c) & (labels != c))
        fn = np.sum((predictions != c) & (labels == c))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def mcc(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Matthews correlation, multiclass (Gorodkin's R_K); 0 when undefined."""
    classes = np.union1d(labels, predictions)
    index = {c: i for i, c in enumerate(classes)}
    confusion = np.zeros((len(classes), len(classes)))
    for t, p in zip(labels, predictions, strict=True):
        confusion[index[t], index[p]] += 1
    t_sum, p_sum = confusion.sum(axis=1), confusion.sum(axis=0)
    n, correct = confusion.sum(), np.trace(confusion)
    cov_tp = correct * n - t_sum @ p_sum
    cov_tt = n * n - t_sum @ t_sum
    cov_pp = n * n - p_sum @ p_sum
    denominator = np.sqrt(cov_tt * cov_pp)
    return float(cov_tp / denominator) if denominator > 0 else 0.0


def agreement(predictions: np.ndarray, fp32_predictions: np.ndarray) -> float:
    """Share of examples where the candidate predicts the fp32 model's class."""
    return float(np.mean(predictions == fp32_predictions))


def cosine(outputs: np.ndarray, fp32_outputs: np.ndarray) -> float:
    """Mean cosine similarity of each example's outputs to fp32's (models without a head)."""
    a = outputs.reshape(len(outputs), -1).astype(np.float64)
    b = fp32_outputs.reshape(len(fp32_outputs), -1).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    sims = np.where(norms > 0, np.sum(a * b, axis=1) / np.where(norms > 0, norms, 1), 1.0)
    return float(np.mean(sims))


def score(metric: str, outputs: np.ndarray, labels, fp32_outputs: np.ndarray | None) -> float:
    if metric == "cosine":
        return cosine(outputs, outputs if fp32_outputs is None else fp32_outputs)
    predictions = np.argmax(outputs, axis=-1)
    if metric == "agreement":
        reference = predictions if fp32_outputs is None else np.argmax(fp32_outputs, axis=-1)
        return agreement(predictions, reference)
    labels = np.asarray(labels)
    return {"accuracy": accuracy, "macro_f1": macro_f1, "mcc": mcc}[metric](predictions, labels)
