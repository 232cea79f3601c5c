import numpy as np
import pytest

from search.metrics import accuracy, agreement, cosine, macro_f1, mcc, score


def test_label_metrics_on_a_known_confusion():
    labels = np.array([0, 0, 0, 1, 1, 2])
    preds = np.array([0, 0, 1, 1, 1, 0])
    assert accuracy(preds, labels) == pytest.approx(4 / 6)
    # per class F1: c0 = 2*2/(4+1+1)=0.667, c1 = 2*2/(4+1+0)=0.8, c2 = 0
    assert macro_f1(preds, labels) == pytest.approx((4 / 6 + 0.8 + 0) / 3)
    assert mcc(labels, labels) == pytest.approx(1.0)
    assert mcc(np.zeros(6, int), labels) == 0.0  # constant predictions: undefined -> 0


def test_binary_mcc_matches_the_textbook_formula():
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    preds = np.array([1, 0, 1, 0, 0, 1, 0, 1])
    tp, tn, fp, fn = 3, 3, 1, 1
    expected = (tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert mcc(preds, labels) == pytest.approx(expected)


def test_fidelity_metrics_need_no_labels():
    fp32 = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.5]])
    same = fp32.copy()
    flipped = np.array([[1.0, 2.0], [0.0, 3.0], [1.0, 0.5]])
    assert agreement(np.argmax(same, 1), np.argmax(fp32, 1)) == 1.0
    assert score("agreement", flipped, None, fp32) == pytest.approx(2 / 3)
    assert cosine(same, fp32) == pytest.approx(1.0)
    assert score("cosine", -fp32, None, fp32) == pytest.approx(-1.0)
