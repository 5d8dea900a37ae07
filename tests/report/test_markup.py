"""The report's one cell/table formatter and one PNG embedder (report/markup.py): how each kind of table
reads a value, and that no other module builds tables, embeds images or picks the matplotlib backend."""
from __future__ import annotations

import base64
import re
from pathlib import Path

import pandas as pd

import cervirad
from cervirad.report.markup import AS_IS, PLAIN, REPORT, ROUNDED, Classed, Html, cell, df_table, figure, figures, table

SRC = Path(cervirad.__file__).parent
CI = {"value": 0.5, "ci_low": 0.25, "ci_high": 0.75, "n": 12}


def test_a_metric_reads_value_and_interval_per_kind_of_table():
    assert cell(CI) == "0.500 <span class='muted'>[0.250, 0.750]</span>"
    assert cell(CI, ROUNDED) == cell(CI)
    assert cell(CI, PLAIN) == "0.500 [0.250, 0.750]"
    assert cell({"value": None, "ci_low": 0.1, "ci_high": 0.2}) == "n/a"
    assert cell({"value": None}, PLAIN) == "–"
    assert cell({"value": 0.1234567}) == "0.1235"  # no interval: the table's plain-number format
    assert cell({"value": 0.1234567}, ROUNDED) == "0.123"


def test_small_samples_are_flagged_with_or_without_a_tooltip():
    small = {"value": 0.5, "ci_low": None, "ci_high": None, "n": 3, "n_too_small": True}
    assert cell(small) == ("0.500 <span class='warn' title='no interval below 5 patients of the class'>n too small "
                           "(n=3)</span>")
    assert cell(small, ROUNDED) == "0.500 <span class='warn'>n too small (n=3)</span>"
    zero = {"value": 1.0, "ci_low": 1.0, "ci_high": 1.0, "n": 2}
    assert cell(zero).endswith(" <span class='warn' title='degenerate interval: rests on n = 2'>n=2</span>")
    assert cell(zero, ROUNDED).endswith(" <span class='warn'>n=2</span>")
    assert cell(zero, PLAIN) == "1.000 [1.000, 1.000]"  # the scanner tables carry no flags
    assert cell({"value": 1.0, "ci_low": 1.0, "ci_high": 1.0}) == "1.000 <span class='muted'>[1.000, 1.000]</span>"


def test_plain_values_per_kind_of_table():
    assert [cell(None, c) for c in (REPORT, ROUNDED, PLAIN, AS_IS)] == ["None", "n/a", "–", ""]
    assert [cell(0.8125, c) for c in (REPORT, ROUNDED, PLAIN, AS_IS)] == ["0.8125", "0.812", "0.812", "0.8125"]
    assert cell(7) == "7" and cell(True) == "True"
    assert cell([1.4, 1.4, 4.0]) == "[1.4, 1.4, 4.0]" and cell({"a": 1}) == "{&quot;a&quot;: 1}"
    assert cell("<10mm") == "&lt;10mm"
    assert cell(Html("<b>x</b>")) == "<b>x</b>"  # already HTML: passed through


def test_table_escapes_headers_and_marks_classed_cells():
    out = table([["a", Classed("ok", "done"), 0.5]], ["<name>", "status", "value"], ROUNDED)
    assert out == ("<table><thead><tr><th>&lt;name&gt;</th><th>status</th><th>value</th></tr></thead><tbody>"
                   "<tr><td>a</td><td class='ok'>done</td><td>0.500</td></tr></tbody></table>")
    df = pd.DataFrame({"k": ["x", "y", "z"], "n": [1, 2, 3], "v": [0.5, None, 0.25]})
    assert df_table(df, AS_IS, max_rows=2) == table([["x", 1, 0.5], ["y", 2, float("nan")]], ["k", "n", "v"], AS_IS)


def test_figure_embeds_the_png_bytes(tmp_path):
    png = tmp_path / "roc_lr.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    out = figure(png)
    data = re.search(r'src="data:image/png;base64,([^"]+)"', out).group(1)
    assert base64.b64decode(data) == png.read_bytes()
    assert 'alt="roc lr"' in out and "<figcaption>roc lr</figcaption>" in out
    assert 'alt="short"' in figure(png, "a <long> caption", alt="short")
    assert "<figcaption>a &lt;long&gt; caption</figcaption>" in figure(png, "a <long> caption")
    assert figures([png, png]).startswith('<div class="figs"><figure>') and figures([]) == ""


def test_one_formatter_one_embedder_one_backend_choice():
    """Only report/markup.py embeds images or writes a table's markup; only plotting.py picks the backend."""
    def offenders(pattern: str, allowed: str) -> list[str]:
        return [str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
                if str(p.relative_to(SRC)) != allowed and re.search(pattern, p.read_text(encoding="utf-8"))]

    assert offenders(r"b64encode|base64,", "report/markup.py") == []
    assert offenders(r"<table>|<td>|<th>", "report/markup.py") == []
    assert offenders(r"matplotlib\.use\(", "plotting.py") == []
