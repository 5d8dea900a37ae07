"""matplotlib for cervirad's figures: :func:`pyplot` sets the Agg backend (files only, no display) once,
before pyplot is first imported, and :func:`save_figure` writes a figure atomically. matplotlib is imported
only when a figure is drawn, so importing this module costs nothing."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from .files import atomic_path


@functools.cache
def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, **kwargs: Any) -> Path:
    """Save a matplotlib figure atomically and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", **{"dpi": 110, "bbox_inches": "tight", **kwargs})
    plt.close(fig)
    return path
