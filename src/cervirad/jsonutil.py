"""Plain-Python values for JSON files and logs (no cervirad imports: any module may use it)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def py_value(v: Any) -> Any:
    """A numpy scalar as the plain Python value (``np.int64(3)`` -> ``3``); anything else unchanged."""
    return v.item() if hasattr(v, "item") else v


def py_dict(d: dict) -> dict:
    """:func:`py_value` of every value (e.g. a search's ``best_params_``)."""
    return {k: py_value(v) for k, v in d.items()}


def jsonable(obj: Any) -> Any:
    """A copy that ``json.dumps`` writes as strict JSON: NaN and +-inf -> None (null), numpy
    scalars and arrays -> Python numbers and lists, tuples -> lists, paths -> strings (nested)."""
    if isinstance(obj, dict):
        return {_key(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist") and hasattr(obj, "dtype"):  # numpy scalar or array
        return jsonable(obj.tolist())
    return obj


def _key(k: Any) -> Any:
    k = py_value(k) if hasattr(k, "dtype") else k
    return str(k) if isinstance(k, Path) else k
