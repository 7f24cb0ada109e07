"""Tasks: loading the official files, labels, zero-shot prompts and answer parsing."""

from vlx.tasks._base import Task
from vlx.tasks.catalog import build_task
from vlx.tasks.esnli_ve import EsnliVeTask
from vlx.tasks.explainer_csv import ExplainerCsvTask
from vlx.tasks.hateful_memes import HatefulMemesTask
from vlx.tasks.parsing import parse_answer
from vlx.tasks.shapes import ShapesTask, generate_shapes
from vlx.tasks.table import TableTask

__all__ = [
    "EsnliVeTask",
    "ExplainerCsvTask",
    "HatefulMemesTask",
    "ShapesTask",
    "TableTask",
    "Task",
    "build_task",
    "generate_shapes",
    "parse_answer",
]
