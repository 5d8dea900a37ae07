"""Individual commands obey the stage table's rules, on a copy of the suite's end-to-end run (slow; CI
runs it): nothing to redo, --force redoes only its stage, run-all --from, another run's folder refused."""
from __future__ import annotations

import subprocess
import time

import pandas as pd
import pytest

from .conftest import cli, env, read_json, run_all_cmd
from .e2e import ONE_CLASSIFIER

pytestmark = pytest.mark.slow


def test_individual_commands_obey_the_same_rules(copied_run):
    run = copied_run
    before = {n: r["started"] for n, r in read_json(run.run_json)["stages"].items()}
    res = cli("classify", "--run-dir", run.path)  # no --config: the run's own config.yaml
    assert res.returncode == 0, res.stderr[-2000:]
    assert "nothing to redo" in res.stderr and "best model" in res.stdout
    time.sleep(1.1)  # records carry second-resolution times
    one = [a for o in ONE_CLASSIFIER for a in ("--set", o)]  # the classifier is not the subject: one, and fast
    res = cli("classify", "--run-dir", run.path, "--force", *one)
    assert res.returncode == 0, res.stderr[-2000:]
    after = {n: r["started"] for n, r in read_json(run.run_json)["stages"].items()}
    assert after["classify"] > before["classify"]
    assert all(after[n] == before[n] for n in ("validate", "preprocess", "train-seg", "features"))
    res = subprocess.run(run_all_cmd(run.path, "--from", "classify", *one), capture_output=True, text=True,
                         encoding="utf-8", env=env(), timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "classify" in res.stdout and "report" in res.stdout and "features" not in res.stdout.split(";")[0]
    # another run's artifacts are not silently replaced
    table = run.path.parent / "table.csv"  # outside the run: an input inside --out is refused first (issue 26)
    pd.read_parquet(run.features_table("manual")).drop(columns="split").to_csv(table, index=False)
    res = cli("classify", "--features", table, "--label-column", "Pathologic_typing", "--out", run.path)
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("cervirad: error")]
    assert res.returncode == 2 and len(lines) == 1 and "holds the artifacts of another run" in lines[0], res.stderr
