"""Issue 23 item 8: `evaluate` reads the radiomics parameters the development run copied into itself."""
from __future__ import annotations

from cervirad.config import Config
from cervirad.pipeline import external_config
from cervirad.layout import RADIOMICS_PARAMS, Layout


def test_external_config_points_at_the_runs_frozen_copy(tmp_path):
    dev = Layout(tmp_path / "dev")
    dev.root.mkdir()
    dev.config_yaml.write_text(Config().to_yaml(), encoding="utf-8")
    assert external_config(dev.root, {"manifest": "m.csv"}, "ext").features.radiomics_params == \
        Config().features.radiomics_params  # an older run without a copy: the recorded path
    dev.features_dir("manual").mkdir(parents=True)
    copy = dev.features_dir("manual") / RADIOMICS_PARAMS
    copy.write_text("setting: {binWidth: 25}\n", encoding="utf-8")
    cfg = external_config(dev.root, {"manifest": "m.csv"}, "ext")
    assert cfg.features.radiomics_params == str(copy.resolve())
