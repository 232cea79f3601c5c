"""qsearch: search post-training quantization configurations of ONNX models.

The Optuna study is the one record of a search; everything else (reports, the beam's state,
the frontier) is derived from it.
"""

__version__ = "0.1.0"
