"""A new stage is one function, one row and one config section: a toy stage between features and classify,
added from this file alone (no cervirad module edited), runs on the real table, is recorded, resumes, and
reruns when what it reads or its config changes."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from cervirad.config import Config, with_overrides
from cervirad.pipeline import run_stages, schedule
from cervirad.rundir import RunDir
from cervirad.stages import STAGES, Artifact, Stage, with_stage

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # it extracts the tiny cohort's features twice
FIXTURE_PARAMS = REPO / "tests" / "fixtures" / "radiomics_original.yaml"


@dataclasses.dataclass(frozen=True)
class RankSection:
    """The toy stage's config section: how many features it keeps."""

    top: int = 3


@dataclasses.dataclass(frozen=True)
class ToyConfig(Config):
    rank: RankSection = dataclasses.field(default_factory=RankSection)


def rank_features(cfg, inputs, st) -> None:
    """The toy stage: the ``rank.top`` most variable feature columns of the manual feature table."""
    table = pd.read_parquet(inputs.features_table("manual"))
    numeric = table.drop(columns=["patient_id", "split"]).select_dtypes("number")
    ranked = numeric.var().sort_values(ascending=False).head(cfg.rank.top)
    ranked.rename("variance").to_csv(st.path(RANKED.where), index_label="feature")


RANKED = Artifact("ranked-features", Path("ranked") / "features.csv")
RANK = Stage("rank-features", f"{__name__}:rank_features", writes=(RANKED,), reads=("features",), config=("rank",))
TABLE = with_stage(STAGES, RANK, after="features")


def toy_config(base: Config, *overrides: str, top: int = 3) -> ToyConfig:
    cfg = with_overrides(base, [f"features.radiomics_params={FIXTURE_PARAMS}", *overrides])
    return ToyConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(Config)}, rank=RankSection(top))


def test_the_row_sits_between_features_and_classify():
    names = [s.name for s in TABLE]
    assert names.index("features") < names.index("rank-features") < names.index("classify")
    assert [s.name for s in schedule(TABLE, ["rank-features"])] == ["validate", "preprocess", "features",
                                                                     "rank-features"]
    assert "rank-features" not in [s.name for s in schedule(TABLE, ["classify"])]  # nothing reads it


@pytest.fixture
def run(tiny_run, tmp_path) -> RunDir:
    """A private copy of the tiny validated and preprocessed run."""
    shutil.copytree(tiny_run.path, tmp_path / "run")
    return RunDir(tmp_path / "run")


def test_a_new_stage_runs_is_recorded_resumes_and_reruns(run, tiny_cfg):
    cfg = toy_config(tiny_cfg)
    assert set(run_stages(cfg, run, ["rank-features"], table=TABLE)) == {"features", "rank-features"}
    out = run.path / "ranked" / "features.csv"
    assert len(pd.read_csv(out)) == 3
    rec = json.loads(run.run_json.read_text(encoding="utf-8"))["stages"]["rank-features"]
    assert rec["status"] == "done" and set(rec["outputs"]) == {"ranked/features.csv"}
    assert set(rec["inputs"]["upstream"]) == {"features"} and set(rec["inputs"]["config"]) == {"rank"}

    assert run_stages(cfg, run, ["rank-features"], table=TABLE) == {}  # nothing changed: resumed, not rerun
    assert run_stages(toy_config(tiny_cfg, top=5), run, ["rank-features"], table=TABLE).keys() == {"rank-features"}
    assert len(pd.read_csv(out)) == 5
    # what it reads changes (other feature values): the features stage and then it run again
    changed = toy_config(tiny_cfg, "features.histogram_bins=16", top=5)
    assert run_stages(changed, run, ["rank-features"], table=TABLE).keys() == {"features", "rank-features"}
    assert run_stages(changed, run, ["rank-features"], table=TABLE) == {}
