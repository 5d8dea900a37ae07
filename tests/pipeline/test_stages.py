"""The orchestrator's rules on a toy stage table (fast): what reruns and why, the record, the lock,
the run folder's identity; and the import graph (no cycles, no stage importing the orchestrator)."""
from __future__ import annotations

import ast
import itertools
import json
import logging
from pathlib import Path

import pytest

from cervirad.config import Config, with_overrides
from cervirad.files import hash_obj
from cervirad.errors import CerviradError
from cervirad.pipeline import run_stages, schedule
from cervirad.rundir import RunDir, RunLockedError
from cervirad.stages import EXTERNAL_STAGES, SEGMENT_STAGES, STAGES, TABLE_STAGES, Artifact, Stage, stage_inputs, writers

CALLS: list[str] = []
RUNS = itertools.count()
FAIL: set[str] = set()
SRC = Path(__file__).resolve().parents[2] / "src" / "cervirad"


def _write(name: str, st, text: str) -> None:
    CALLS.append(name)
    if name in FAIL:
        raise CerviradError(f"stage {name} failed on purpose")
    st.path(f"{name}.txt").write_text(text, encoding="utf-8")


def stage_a(cfg, inputs, st):
    _write("a", st, f"slice_size={cfg.preprocess.slice_size}")


def stage_b(cfg, inputs, st):  # like training: every run writes different bytes
    _write("b", st, f"run {next(RUNS)} " + inputs["a"].read_text(encoding="utf-8")
           + f" epochs={cfg.segmentation.epochs}")


def stage_c(cfg, inputs, st):
    _write("c", st, inputs["b"].read_text(encoding="utf-8") + f" dca={cfg.report.dca_category}")


def stage_param(cfg, inputs, st, table):
    _write("p", st, Path(table).read_text(encoding="utf-8"))


TOY = (
    Stage("a", f"{__name__}:stage_a", writes=(Artifact("a", Path("a.txt")),), config=("preprocess.slice_size",)),
    Stage("b", f"{__name__}:stage_b", writes=(Artifact("b", Path("b.txt")),), reads=("a",), config=("segmentation",)),
    Stage("c", f"{__name__}:stage_c", writes=(Artifact("c", Path("c.txt")),), reads=("b",), config=("report",)),
)
PARAM = (Stage("p", f"{__name__}:stage_param", writes=(Artifact("p", Path("p.txt")),), options=("table",),
               file_options=("table",)),)


@pytest.fixture(autouse=True)
def _reset():
    CALLS.clear()
    FAIL.clear()


def toy(run: RunDir, cfg: Config | None = None, targets=None, **kw) -> list[str]:
    CALLS.clear()
    run_stages(cfg or Config(), run, targets, table=TOY, **kw)
    return list(CALLS)


def test_first_run_runs_all_and_a_rerun_nothing(tmp_path, caplog):
    run = RunDir(tmp_path / "r")
    assert toy(run) == ["a", "b", "c"]
    info = json.loads(run.run_json.read_text(encoding="utf-8"))
    assert "pipeline" not in info and set(info["stages"]) == {"a", "b", "c"}
    rec = info["stages"]["b"]
    assert rec["status"] == "done" and rec["key"] and rec["seconds"] >= 0 and rec["finished"]
    assert rec["outputs"] == {"b.txt": rec["outputs"]["b.txt"]} and len(rec["outputs"]["b.txt"]) == 16
    a = info["stages"]["a"]
    assert rec["inputs"]["upstream"] == {"a": hash_obj(a["outputs"])}  # what b reads: the bytes a wrote
    with caplog.at_level(logging.INFO, logger="cervirad.pipeline"):
        assert toy(run) == []
    assert "nothing to redo: 3 stage(s) up to date" in caplog.text


def test_a_config_section_reruns_its_stage_and_downstream_only(tmp_path, caplog):
    run = RunDir(tmp_path / "r")
    toy(run)
    with caplog.at_level(logging.INFO, logger="cervirad.pipeline"):
        assert toy(run, with_overrides(Config(), ["segmentation.epochs=3"])) == ["b", "c"]
    assert "b                  runs: config section segmentation changed" in caplog.text
    assert "c                  runs: b was redone" in caplog.text
    assert (run.path / "c.txt").read_text(encoding="utf-8").endswith("epochs=3 dca=6")
    assert toy(run, with_overrides(Config(), ["segmentation.epochs=3", "report.dca_category=2"])) == ["c"]


def test_touch_reruns_nothing_deleting_or_editing_an_output_reruns_from_there(tmp_path, caplog):
    import os

    run = RunDir(tmp_path / "r")
    toy(run)
    for name in "abc":
        os.utime(run.path / f"{name}.txt", None)  # new mtime, same bytes
    assert toy(run) == []
    (run.path / "b.txt").unlink()
    with caplog.at_level(logging.INFO, logger="cervirad.pipeline"):
        assert toy(run) == ["b", "c"]
    assert "output b.txt is missing" in caplog.text
    (run.path / "a.txt").write_text("edited by hand", encoding="utf-8")
    assert toy(run) == ["a"]  # a writes again the bytes b read: b and c are current (contents decide)
    assert (run.path / "a.txt").read_text(encoding="utf-8") == "slice_size=256"
    (run.path / "b.txt").write_text("edited by hand", encoding="utf-8")
    assert toy(run) == ["b", "c"]  # b writes other bytes (every run does): c reads them


def test_force_and_from(tmp_path):
    run = RunDir(tmp_path / "r")
    toy(run)
    before = {n: run.stage_record(n)["started"] for n in "abc"}
    assert toy(run, force=True) == ["a", "b", "c"]
    assert toy(run, start="b") == ["b", "c"]
    # an individual command: its target and what it needs, under the same rules
    assert toy(run, targets=["b"]) == []
    assert toy(run, targets=["b"], force=True) == ["b"]  # forces the target, not what it needs
    assert toy(run, targets=["c"]) == ["c"]  # b wrote other bytes since c last ran
    assert toy(run, targets=["a"], force=True) == ["a"]
    assert toy(run, targets=["c"]) == []  # a wrote the same bytes: b and c are still current
    assert all(run.stage_record(n)["started"] >= before[n] for n in "abc")
    with pytest.raises(CerviradError, match="Unknown stage 'zzz'"):
        toy(run, start="zzz")


def test_a_failed_stage_is_recorded_and_redone_alone(tmp_path):
    run = RunDir(tmp_path / "r")
    FAIL.add("c")
    with pytest.raises(CerviradError, match="on purpose"):
        toy(run)
    rec = run.stage_record("c")
    assert rec["status"] == "failed" and "on purpose" in rec["error"] and not (run.path / "c.txt").exists()
    FAIL.clear()
    assert toy(run) == ["c"]


def test_file_content_not_path_decides(tmp_path):
    run = RunDir(tmp_path / "r")
    t1, t2 = tmp_path / "t1.yaml", tmp_path / "t2.yaml"
    t1.write_text("binCount: 32\n", encoding="utf-8")
    t2.write_text("binCount: 32\n", encoding="utf-8")

    def go(table: Path) -> list[str]:
        CALLS.clear()
        run_stages(Config(), run, table=PARAM, options={"table": str(table)})
        return list(CALLS)

    assert go(t1) == ["p"]
    assert go(t2) == []  # same bytes elsewhere: same key
    t2.write_text("binCount: 8\n", encoding="utf-8")
    assert go(t2) == ["p"]


def test_lock_refuses_a_second_process_and_leaves_nothing(tmp_path):
    run = RunDir(tmp_path / "r")
    with run.lock():
        assert (run.path / ".lock").read_text(encoding="utf-8").strip().isdigit()
        with pytest.raises(RunLockedError, match=r"in use by another cervirad process \(pid \d+\)") as e:
            toy(RunDir(tmp_path / "r"))
        assert e.value.exit_code == 2
    assert not (run.path / ".lock").exists()
    (run.path / ".lock").write_text("999999\n", encoding="utf-8")  # left by a killed process: taken over
    assert toy(run) == ["a", "b", "c"]


def test_another_runs_artifacts_are_refused_unless_forced(tmp_path):
    run = RunDir(tmp_path / "r")
    toy(run)
    other = {"kind": "table", "source": "/elsewhere/table.csv"}
    with pytest.raises(CerviradError, match="holds the artifacts of another run .*pass --force"):
        toy(run, identity=other)
    assert toy(run, identity=other, force=True) == ["a", "b", "c"]
    assert json.loads(run.run_json.read_text(encoding="utf-8"))["identity"] == other


@pytest.mark.parametrize("table", [STAGES, TABLE_STAGES, EXTERNAL_STAGES, SEGMENT_STAGES])
def test_the_real_tables_are_consistent(table):
    names = [s.name for s in table]
    writer = {a: s.name for a, (s, _) in writers(table).items()}  # one writer per artifact, or it raises
    for i, s in enumerate(table):
        assert all(names.index(writer[a]) < i for a in s.all_reads if a in writer), s.name  # written before read
        assert callable(s.load()) and (s.check is None or callable(s.checker()))
        assert s.rescore is None or callable(s.load(rescore=True))
        stage_inputs(s, "/run", table=table)  # every artifact it reads is known
        for key in (*s.config, *s.scoring):
            node = Config().to_dict()
            for part in key.split("."):
                node = node[part]
        assert all(any(k.startswith(sec + ".") for sec in s.config) for k in s.scoring), s.name
    outs = [str(p) for s in table for a in s.writes for p in a.owned(Config(), {})]
    assert len(outs) == len(set(outs))
    if table is STAGES:
        assert names == ["validate", "preprocess", "plan", "train-seg", "features", "features-predicted", "classify",
                         "report"]
        assert [s.name for s in schedule(STAGES, ["classify"])] == ["validate", "preprocess", "features", "classify"]
        assert [s.name for s in schedule(STAGES, ["report"])] == ["report"]  # it reads what exists


def test_a_stage_sees_only_the_artifacts_it_declares(tmp_path):
    from cervirad.stages import UndeclaredRead

    classify = next(s for s in STAGES if s.name == "classify")
    inputs = stage_inputs(classify, tmp_path)
    assert inputs["features"] == tmp_path / "features" and inputs.features_table() == tmp_path / "features" / \
        "features.parquet"
    assert inputs.splits == tmp_path / "splits.json" and inputs.cache_dir("x") == tmp_path / "cache" / "x"
    assert inputs.classification_dir == tmp_path / "classification"  # its own earlier results
    for undeclared in (lambda: inputs.seg_model(), lambda: inputs.plan, lambda: inputs["masks"],
                       lambda: inputs.read_run_json()):
        with pytest.raises(UndeclaredRead, match="stage 'classify'"):
            undeclared()
    assert not hasattr(inputs, "stage_record") and not hasattr(inputs, "lock")  # no record, no lock: no run folder


# --------------------------------------------------------------------------- the import graph
def _imports(path: Path, module: str) -> set[str]:
    """Modules of the package that ``path`` imports anywhere (inside functions too)."""
    is_pkg = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            out |= {stem} | {f"{stem}.{a.name}" for a in node.names}
    return out


def import_graph() -> dict[str, set[str]]:
    mods = {}
    for f in SRC.rglob("*.py"):
        parts = list(f.relative_to(SRC.parent).with_suffix("").parts)
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    graph = {}
    for m, f in mods.items():
        graph[m] = {t for t in _imports(f, m) if t in mods and t != m and not m.startswith(t + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (iterative Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def test_no_import_cycle_and_no_stage_imports_the_orchestrator():
    graph = import_graph()
    assert len(graph) > 30
    assert cycles(graph) == []
    importers = sorted(m for m, deps in graph.items() if "cervirad.pipeline" in deps)
    assert importers and all(m.startswith("cervirad.cli.") for m in importers), importers


def test_the_cycle_check_can_fail():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


@pytest.mark.parametrize("row", [r for table in (STAGES, TABLE_STAGES, EXTERNAL_STAGES, SEGMENT_STAGES) for r in table],
                         ids=lambda r: r.name)
def test_a_stage_that_reads_the_cohort_declares_it(row):
    """The orchestrator hands ``inputs.cohort`` only to rows with reads_cohort (and keys them on its content):
    a stage function that reads it without declaring it silently gets None (score-external did: its
    labelled patients without features were dropped instead of scored from the prior)."""
    import inspect

    uses = "inputs.cohort" in inspect.getsource(row.load())
    assert not uses or row.reads_cohort, f"{row.func} reads inputs.cohort but its row does not declare reads_cohort"
