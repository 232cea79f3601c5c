"""Export a Hugging Face sequence classifier to ONNX, in a folder Optimum can load.

Used by the default task and by the tests' tiny models, so both take the same path.
"""

from __future__ import annotations

import warnings
from pathlib import Path


def export_classifier(model, tokenizer, out_dir: Path, opset: int = 17) -> Path:
    """Write model.onnx, config.json and the tokenizer into `out_dir`.

    `torch.onnx.export(dynamo=False)`: the dynamo exporter fails on this stack (design notes).
    Inputs keep Hugging Face's names so `ORTModelForSequenceClassification` loads the folder.
    """
    import torch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    sample = tokenizer(["a short example", "another one"], return_tensors="pt", padding=True)
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]
    axes = {n: {0: "batch_size", 1: "sequence_length"} for n in names}
    axes["logits"] = {0: "batch_size"}
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about constants in transformers' mask code; the dynamic axes
        # cover batch and sequence length, which is what varies.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            model,
            tuple(sample[n] for n in names),
            str(out_dir / "model.onnx"),
            input_names=names,
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    model.config.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir / "model.onnx"
