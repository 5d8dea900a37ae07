"""How the report reads another stage's artifact: a JSON file's value (None when the stage did not write
it), and the entries of a ``metrics.json`` that are numbers or metrics."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..files import read_json


def read_optional(path: Path) -> Any:
    """The JSON value of ``path``; None when there is no such file."""
    return read_json(path) if path.is_file() else None


def scalar_metrics(flat: dict) -> dict:
    """The numbers and the metrics (dicts with a ``value``) of a ``metrics.json``."""
    return {k: v for k, v in flat.items() if isinstance(v, (int, float)) or (isinstance(v, dict) and "value" in v)}
