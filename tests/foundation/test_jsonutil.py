"""write_json writes strict JSON: NaN/inf as null, numpy values as plain numbers, everywhere in the object."""
from __future__ import annotations

import json
import math

import numpy as np

from cervirad.jsonutil import py_dict, py_value
from cervirad.files import write_json


def test_write_json_nonfinite_is_null_at_any_depth(tmp_path):
    obj = {"a": float("nan"), "b": [np.float64("inf"), np.float32("nan"), 1.5], "c": {"d": (np.int64(3), -math.inf)},
           "e": np.array([1.0, np.nan]), np.int64(7): True, "f": np.bool_(True)}
    p = write_json(tmp_path / "x.json", obj)
    text = p.read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [None, None, 1.5], "c": {"d": [3, None]}, "e": [1.0, None], "7": True,
                                "f": True}


def test_py_value_and_dict():
    assert py_value(np.int64(2)) == 2 and type(py_value(np.int64(2))) is int and py_value("x") == "x"
    assert py_dict({"k": np.float64(0.5), "s": "scale"}) == {"k": 0.5, "s": "scale"}
