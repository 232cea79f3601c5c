"""Tasks: the model, data and metric a search is scored on."""

from search.tasks.base import Batch, TextClassificationTask

__all__ = ["Batch", "TextClassificationTask"]
