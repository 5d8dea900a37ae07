"""What a setting may be: a small language of value ranges, checked when a config loads.

A :class:`Range` is the rule in words (``expected``, quoted in the error message) and the test
(``ok``). :func:`between`, :func:`one_of` and :func:`either` build them. The config checks
(:mod:`cervirad.config.checks`) and the model registries (:mod:`cervirad.classifiers`: the
range of every searchable classifier parameter) both use them, so this module imports nothing
of cervirad's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping


@dataclass(frozen=True)
class Range:
    """What a value may be: ``expected`` in words, ``ok`` the test."""

    expected: str
    ok: Callable[[Any], bool]


def is_num(v: Any, integer: bool = False) -> bool:
    """A finite number (an int when ``integer``); booleans are not numbers."""
    if isinstance(v, bool):
        return False
    return isinstance(v, int) if integer else isinstance(v, (int, float)) and math.isfinite(v)


def between(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False,
            integer: bool = False, null: bool = False, multiple: int | None = None) -> Range:
    """A number (integer) in [lo, hi] (open ends with lo_open / hi_open), optionally null or a multiple."""
    kind = "an integer" if integer else "a number"
    if lo is not None and hi is not None:
        text = f"{kind} in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    elif lo is not None:
        text = f"{kind} {'>' if lo_open else '>='} {lo:g}"
    elif hi is not None:
        text = f"{kind} {'<' if hi_open else '<='} {hi:g}"
    else:
        text = kind
    if multiple:
        text += f" and a multiple of {multiple}"

    def ok(v: Any) -> bool:
        if v is None:
            return null
        if not is_num(v, integer):
            return False
        if lo is not None and (v <= lo if lo_open else v < lo):
            return False
        if hi is not None and (v >= hi if hi_open else v > hi):
            return False
        return not multiple or v % multiple == 0

    return Range(("null or " if null else "") + text, ok)


def one_of(*choices: Any) -> Range:
    return Range("one of " + ", ".join("null" if c is None else repr(c) for c in choices), lambda v: v in choices)


def either(a: Range, b: Range) -> Range:
    return Range(f"{a.expected}, or {b.expected}", lambda v: a.ok(v) or b.ok(v))


class KeyOf:
    """One of the keys of ``registry`` as it is when checked (a registry may gain entries after import)."""

    def __init__(self, registry: Mapping[str, Any]):
        self.registry = registry

    @property
    def expected(self) -> str:
        return one_of(*self.registry).expected

    def ok(self, v: Any) -> bool:
        return isinstance(v, str) and v in self.registry


NONEMPTY = Range("a non-empty string", lambda v: isinstance(v, str) and bool(v.strip()))
POSITIVE = between(0, lo_open=True)
NONNEG = between(0)
COUNT = between(1, integer=True)
FRACTION = between(0, 1, lo_open=True)  # (0, 1]
PROB = between(0, 1, lo_open=True, hi_open=True)  # (0, 1)
