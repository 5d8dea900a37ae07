"""A new classifier is one entry of cervirad.classifiers.CLASSIFIERS: registered there and nowhere else, the
config accepts its name and grid, the classify stage tunes, scores, saves and labels it."""
from __future__ import annotations

import pytest

from cervirad.classifiers import CLASSIFIERS, Classifier
from cervirad.config import load_config, with_overrides
from cervirad.errors import ConfigError
from cervirad.io import write_table
from cervirad.pipeline import classify_table
from cervirad.ranges import COUNT, one_of
from tests.classification.synthetic import synthetic_table

KNN = Classifier(
    label="k nearest neighbours",
    estimator="sklearn.neighbors:KNeighborsClassifier",
    grid={"n_neighbors": [3, 7]},
    params=("algorithm", "leaf_size", "metric", "metric_params", "n_jobs", "n_neighbors", "p", "weights"),
    ranges={"n_neighbors": COUNT, "weights": one_of("uniform", "distance")},
)


@pytest.fixture
def knn():
    """The toy classifier registered for one test (monkeypatch restores the registry)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(CLASSIFIERS, "knn", KNN)
        yield


def test_a_registered_classifier_runs_through_the_classify_stage(knn, tmp_path):
    from sklearn.neighbors import KNeighborsClassifier

    df = synthetic_table({"benign": 24, "malignant": 20}, n_features=20, informative=4, signal=1.5, seed=5,
                         label="Target").drop(columns="split").rename(columns={"patient_id": "ID"})
    write_table(df, tmp_path / "t.csv")
    cfg = load_config(None, ["classification.models=[knn]", "classification.selectors=[anova]",
                             "classification.k_grid=[5, 10]", "classification.cv_folds=3",
                             "classification.outer_folds=3", "classification.bootstrap=20",
                             "classification.permutation_repeats=2", "classification.calibration=none",
                             "execution.n_jobs=1"])
    assert cfg.classification.grids["knn"] == {"n_neighbors": [3, 7]}  # the entry's default grid
    summary = classify_table(cfg, tmp_path / "t.csv", "ID", "Target", tmp_path / "out")

    out = tmp_path / "out" / "classification"
    assert (out / "models" / "knn.joblib").is_file() and (out / "figures" / "roc_knn.png").is_file()
    assert "knn" in summary["models"], summary
    import joblib

    pipe = joblib.load(out / "models" / "knn.joblib")
    assert isinstance(pipe.named_steps["clf"], KNeighborsClassifier)
    assert pipe.named_steps["clf"].n_neighbors in (3, 7)


def test_its_grid_is_checked_against_its_entry(knn, fast_cfg):
    with pytest.raises(ConfigError, match=r"'classification.grids.knn.n_neighbour': 'n_neighbour' is not a parameter "
                                          r"of the knn classifier; did you mean 'n_neighbors'\?"):
        with_overrides(fast_cfg, ["classification.grids.knn.n_neighbour=[3]"])
    with pytest.raises(ConfigError, match=r"grids.knn.n_neighbors\[0\]': expected an integer >= 1, got 0"):
        with_overrides(fast_cfg, ["classification.grids.knn.n_neighbors=[0]"])


def test_unregistered_it_is_refused(fast_cfg):
    assert "knn" not in CLASSIFIERS
    with pytest.raises(ConfigError, match=r"classification.models\[0\]': expected one of 'rf', 'xgboost', 'svm', "
                                          r"'lr', got 'knn'"):
        with_overrides(fast_cfg, ["classification.models=[knn]"])
