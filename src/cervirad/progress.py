"""Progress that reads well both in a terminal and in a log file.

On a terminal (stderr is a TTY) a tqdm bar is drawn; anywhere else (CI, ``nohup``, a log file,
pytest) there is no bar and no carriage return: :func:`progress` logs one line each time another
10 % of the items is done, and after any item that ends ``EVERY_S`` seconds or more after the last
line (so slow items still show life at least every 30 s, item by item).
``TQDM_DISABLE=1`` turns bars off as well, like tqdm itself.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from typing import Iterable, Iterator, Optional, TypeVar

T = TypeVar("T")
log = logging.getLogger("cervirad")
STEPS = 10  # one log line per 1/STEPS of the items
EVERY_S = 30.0  # and one after an item finishing this long after the last line


def bar_enabled() -> bool:
    """True when a progress bar should be drawn: stderr is a terminal and TQDM_DISABLE is not set."""
    if os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no"):
        return False
    try:
        return bool(sys.stderr is not None and sys.stderr.isatty())
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def progress(iterable: Iterable[T], total: Optional[int] = None, desc: str = "", unit: str = "item",
             logger: Optional[logging.Logger] = None) -> Iterator[T]:
    """Yield the items of ``iterable``: a tqdm bar on a terminal, otherwise a log line per 10 % done.

    A line is logged once the consumer has finished with an item (when it asks for the next one),
    as ``desc: i/total units (pct %) done, elapsed s``.
    """
    if total is None:
        total = len(iterable) if hasattr(iterable, "__len__") else None  # type: ignore[arg-type]
    if bar_enabled():
        from tqdm.auto import tqdm

        yield from tqdm(iterable, total=total, desc=desc, unit=unit, leave=False)
        return
    logger = logger or log
    t0 = last = time.perf_counter()
    i = 0
    for i, item in enumerate(iterable, 1):
        yield item
        now = time.perf_counter()
        if total and ((i * STEPS) // total > ((i - 1) * STEPS) // total or now - last >= EVERY_S):
            last = now
            logger.info("%s: %d/%d %ss (%.0f %%) done, %.0f s", desc, i, total, unit,
                        100.0 * i / total, now - t0)
    if not total and i:
        logger.info("%s: %d %ss done, %.0f s", desc, i, unit, time.perf_counter() - t0)
