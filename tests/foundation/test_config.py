from pathlib import Path

import pytest

from cervirad.config import Config, load_config, with_overrides
from cervirad.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)


def test_paper_config_states_every_setting_explicitly():
    import yaml

    raw = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text(encoding="utf-8"))
    full = Config().to_dict()

    def keys(d, prefix=""):
        out = set()
        for k, v in d.items():
            out.add(prefix + k)
            if isinstance(v, dict) and k != "grids":
                out |= keys(v, prefix + k + ".")
        return out

    assert keys(full) == keys(raw)


def test_defaults_are_the_papers_settings():
    cfg = Config()
    assert cfg.segmentation.lr == 1e-3 and cfg.segmentation.batch_size == 4 and cfg.segmentation.epochs == 100
    assert cfg.segmentation.early_stopping_patience == 10 and cfg.segmentation.early_stopping_min_delta == 0.001
    assert cfg.segmentation.lstm_hidden == 256
    assert (cfg.preprocess.split.train, cfg.preprocess.split.val, cfg.preprocess.split.test) == (0.7, 0.15, 0.15)
    assert cfg.preprocess.slice_size == 256
    aug = cfg.segmentation.augmentation
    assert (aug.rotation_deg, aug.scale_min, aug.scale_max, aug.noise_sd) == (15.0, 0.9, 1.1, 0.01)
    rf = cfg.classification.grids["rf"]
    assert rf == {"n_estimators": [50, 100, 200, 300], "max_depth": [None, 10, 20, 30], "min_samples_split": [2, 5, 10]}
    assert min(cfg.classification.k_grid) >= 5 and max(cfg.classification.k_grid) <= 100


def test_config_is_frozen():
    cfg = Config()
    with pytest.raises(Exception):
        cfg.run.seed = 3  # type: ignore[misc]


def test_unknown_key_is_refused_with_its_path(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("segmentation:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match=r"Unknown config key 'segmentation\.epoch'"):
        load_config(p)


def test_wrong_type_is_refused_with_its_path(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("segmentation:\n  epochs: ten\n")
    with pytest.raises(ConfigError, match=r"'segmentation\.epochs': expected an integer, got 'ten'"):
        load_config(p)


def test_nested_wrong_type(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("preprocess:\n  spacing: [1.0, 1.0]\n")
    with pytest.raises(ConfigError, match=r"preprocess\.spacing"):
        load_config(p)


def test_overrides_are_typed_and_applied():
    cfg = load_config(REPO / "configs" / "demo.yaml", ["segmentation.epochs=2", "preprocess.spacing=[1,1,3]"])
    assert cfg.segmentation.epochs == 2
    assert cfg.preprocess.spacing == (1.0, 1.0, 3.0)
    with pytest.raises(ConfigError, match="segmentation.epochs"):
        load_config(None, ["segmentation.epochs=abc"])
    with pytest.raises(ConfigError, match="no '='"):
        load_config(None, ["segmentation.epochs"])


def test_hash_changes_with_settings():
    assert Config().hash() != with_overrides(Config(), ["run.seed=1"]).hash()
    assert Config().hash() == with_overrides(Config(), []).hash()


def test_split_fractions_must_sum_to_one():
    with pytest.raises(ConfigError, match="sum to 1"):
        load_config(None, ["preprocess.split.train=0.9"])


def test_execution_workers_resolves_all_cpus():
    import os

    assert load_config(None, ["execution.n_jobs=-1"]).execution.workers == max(1, os.cpu_count() or 1)
    assert load_config(None, ["execution.n_jobs=3"]).execution.workers == 3
