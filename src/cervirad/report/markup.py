"""The report's HTML pieces, one of each: :func:`cell` formats a value, :func:`table` lays rows out,
:func:`figure` embeds a PNG (base64, nothing fetched) and :func:`gallery` puts figures side by side.

Every section of ``report.html`` builds its tables and figures here. A table's :class:`Cells` says how
its values read: how many digits a plain number keeps, what a missing value shows, and whether a
metric's interval carries the small-sample warnings (issue 23). A metric is a dict with ``value``
(and ``ci_low`` / ``ci_high`` / ``n`` / ``n_too_small``), shown as ``value [low, high]`` with 3 decimals.
"""
from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, NamedTuple

import pandas as pd


Section = tuple[str, str, str]  # (anchor, title, body HTML): one section of the page


class Html(str):
    """Text that is already HTML: :func:`cell` passes it through unescaped."""


class Classed(NamedTuple):
    """A table cell with a CSS class (``<td class='ok'>``)."""
    css: str
    value: Any


@dataclass(frozen=True)
class Cells:
    """How a table shows its values."""
    number: str = ".4g"  # format spec of a plain float ("" reads as Python prints it)
    none: str = "None"  # a plain None
    no_value: str = "n/a"  # a metric whose value is None
    flags: str = "titled"  # small-sample warnings on a metric: "titled" (with a tooltip why), "plain", "off"
    muted: bool = True  # the interval in a muted span (False: plain "[low, high]")


REPORT = Cells()  # the run's summary, cohort, segmentation, classification and external tables
ROUNDED = Cells(number=".3f", none="n/a", flags="plain")  # the paper results and the segmentation recipe
PLAIN = Cells(number=".3f", none="–", no_value="–", flags="off", muted=False)  # the scanner (ComBat) tables
AS_IS = Cells(number="", none="")  # the robustness tables: numbers as the CSV holds them


def _metric(v: dict, cells: Cells) -> str:
    val, lo, hi, n = v.get("value"), v.get("ci_low"), v.get("ci_high"), v.get("n")
    if val is None:
        return cells.no_value
    if v.get("n_too_small") and cells.flags != "off":  # issue 23: no per-class interval below 5 patients
        tip = " title='no interval below 5 patients of the class'" if cells.flags == "titled" else ""
        return f"{val:.3f} <span class='warn'{tip}>n too small (n={n})</span>"
    if lo is None or hi is None:
        return cell(val, cells)
    interval = f"[{lo:.3f}, {hi:.3f}]"
    out = f"{val:.3f} " + (f"<span class='muted'>{interval}</span>" if cells.muted else interval)
    if lo == hi and n is not None and cells.flags != "off":  # a zero-width interval is a tiny sample, not certainty
        tip = f" title='degenerate interval: rests on n = {n}'" if cells.flags == "titled" else ""
        out += f" <span class='warn'{tip}>n={n}</span>"
    return out


def cell(v: Any, cells: Cells = REPORT) -> Html:
    """One value as table-cell HTML: a metric with its interval, a number, a list (as JSON) or escaped text."""
    if isinstance(v, Html):
        return v
    if isinstance(v, dict) and "value" in v:
        return Html(_metric(v, cells))
    if v is None:
        return Html(cells.none)
    if isinstance(v, float):
        return Html(format(v, cells.number))
    if isinstance(v, (list, dict)):
        return Html(html.escape(json.dumps(v)[:120]))
    return Html(html.escape(str(v)))


def _td(v: Any, cells: Cells) -> str:
    if isinstance(v, Classed):
        return f"<td class='{v.css}'>{cell(v.value, cells)}</td>"
    return f"<td>{cell(v, cells)}</td>"


def table(rows: Iterable[Iterable[Any]], header: list[str], cells: Cells = REPORT) -> str:
    """``rows`` under ``header``, every value through :func:`cell`."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(_td(c, cells) for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def df_table(df: pd.DataFrame, cells: Cells = REPORT, max_rows: int | None = None) -> str:
    """A data frame as a :func:`table` (its first ``max_rows`` rows)."""
    shown = df if max_rows is None else df.head(max_rows)
    return table(shown.itertuples(index=False), list(df.columns), cells)


def figure(path: Path, caption: str | None = None, alt: str | None = None) -> str:
    """A PNG embedded as base64 with its caption (default: the file name); ``alt`` defaults to the caption."""
    data = base64.b64encode(path.read_bytes()).decode()
    cap = html.escape(caption or path.stem.replace("_", " "))
    return (f'<figure><img alt="{cap if alt is None else html.escape(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{cap}</figcaption></figure>")


def gallery(figures: list[str]) -> str:
    """Figures side by side ('' for none)."""
    return '<div class="figs">' + "".join(figures) + "</div>" if figures else ""


def figures(paths: list[Path]) -> str:
    """Each PNG of ``paths`` embedded, captioned by its file name, side by side."""
    return gallery([figure(p) for p in paths])
