import json

import pytest

from cervirad.config import Config
from cervirad.errors import InputError
from cervirad.files import atomic_path, write_json
from cervirad.rundir import RunDir


def test_run_json_carries_provenance(tmp_path):
    cfg = Config()
    run = RunDir(tmp_path / "r", cfg)
    info = json.loads((tmp_path / "r" / "run.json").read_text(encoding="utf-8"))
    for key in ("cervirad_version", "config_hash", "git_commit", "packages", "seeds", "stages", "created"):
        assert key in info
    assert info["config_hash"] == cfg.hash()
    assert info["seeds"]["run"] == cfg.run.seed
    assert info["packages"]["numpy"] and info["packages"]["SimpleITK"]
    assert (tmp_path / "r" / "config.yaml").read_text(encoding="utf-8") == cfg.to_yaml()
    assert run.path == (tmp_path / "r").resolve()


def test_stage_promotes_on_success_and_records_timing(tmp_path):
    run = RunDir(tmp_path / "r", Config())
    with run.stage("demo-stage", key="k1") as st:
        write_json(st.path("things/a.json"), {"a": 1})
        assert not (run.path / "things").exists()  # not visible until the stage succeeds
    assert json.loads((run.path / "things" / "a.json").read_text(encoding="utf-8")) == {"a": 1}
    rec = run.stage_record("demo-stage")
    assert rec["status"] == "done" and rec["seconds"] >= 0 and rec["key"] == "k1"
    assert not (run.path / ".partial").exists()


def test_failed_stage_leaves_only_its_error(tmp_path):
    run = RunDir(tmp_path / "r", Config())
    before = sorted(p.name for p in run.path.iterdir())
    with pytest.raises(InputError):
        with run.stage("bad") as st:
            write_json(st.path("out/x.json"), {})
            raise InputError("Missing image file for case 'P1': 'x' does not exist; fix the path.")
    assert sorted(p.name for p in run.path.iterdir()) == before
    rec = run.stage_record("bad")
    assert rec["status"] == "failed" and "P1" in rec["error"]


def test_atomic_path_leaves_no_partial_file(tmp_path):
    target = tmp_path / "f.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text(encoding="utf-8") == "whole"


def test_stage_replace_drops_stale_files(tmp_path):
    run = RunDir(tmp_path / "r", Config())
    with run.stage("s") as st:
        write_json(st.path("out/old.json"), {})
        write_json(st.path("keep/a.json"), {})
    with run.stage("s", replace=("out",)) as st:
        write_json(st.path("out/new.json"), {})
        write_json(st.path("keep/b.json"), {})
    assert sorted(p.name for p in (run.path / "out").iterdir()) == ["new.json"]
    assert sorted(p.name for p in (run.path / "keep").iterdir()) == ["a.json", "b.json"]
