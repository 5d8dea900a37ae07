"""Progress output: a log line per 10 % when stderr is not a terminal (CI, log files), never a bar."""
from __future__ import annotations

import logging

import pytest

from cervirad.progress import bar_enabled, progress


@pytest.fixture(autouse=True)
def no_tty(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert not bar_enabled()  # pytest captures stderr: not a terminal


def _lines(caplog, n, **kw):
    caplog.set_level(logging.INFO)
    got = list(progress(range(n), n, "extract-features", "case", logging.getLogger("test.progress"), **kw))
    assert got == list(range(n))
    return [r.getMessage() for r in caplog.records if r.name == "test.progress"]


def test_25_items_give_10_lines(caplog, capsys):
    lines = _lines(caplog, 25)
    assert [ln.split(" (")[0] for ln in lines] == [f"extract-features: {i}/25 cases" for i in
                                                   (3, 5, 8, 10, 13, 15, 18, 20, 23, 25)]
    assert lines[-1].startswith("extract-features: 25/25 cases (100 %) done, ")
    out = capsys.readouterr()
    assert "\r" not in out.err + out.out + "".join(lines)


def test_few_items_one_line_each(caplog):
    assert len(_lines(caplog, 4)) == 4


def test_empty_logs_nothing(caplog):
    assert _lines(caplog, 0) == []


def test_unknown_total_logs_once(caplog):
    caplog.set_level(logging.INFO)
    assert list(progress(iter("abc"), desc="x", logger=logging.getLogger("test.progress"))) == list("abc")
    assert [r.getMessage().split(",")[0] for r in caplog.records] == ["x: 3 items done"]


def test_tty_draws_a_bar_unless_tqdm_disable(monkeypatch):
    class Tty:
        def isatty(self):
            return True

        def write(self, s):
            pass

        def flush(self):
            pass

    monkeypatch.setattr("sys.stderr", Tty())
    assert bar_enabled()
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert not bar_enabled()
