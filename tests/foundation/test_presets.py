"""Packaged presets (cervirad/configs/): found by name or repo-relative path from any directory."""
from __future__ import annotations

from pathlib import Path

import pytest

from cervirad import presets
from cervirad.config import Config, load_config
from cervirad.errors import ConfigError
from cervirad.features.radiomics_ext import load_params

PACKAGED = Path(presets.__file__).parent / "configs"


def test_repo_configs_is_the_packaged_folder():
    repo_configs = Path(__file__).resolve().parents[2] / "configs"
    assert repo_configs.is_symlink() and repo_configs.resolve() == PACKAGED.resolve()


@pytest.mark.parametrize("name", ["demo", "demo.yaml", "configs/demo.yaml"])
def test_config_by_name_from_any_directory(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert presets.resolve(name) == PACKAGED / "demo.yaml"
    assert load_config(name).data.source == "demo"


@pytest.mark.parametrize("name", ["radiomics/paper.yaml", "configs/radiomics/paper.yaml", "paper", "paper.yaml"])
def test_radiomics_preset_by_name(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert presets.resolve(name, kind="radiomics") == PACKAGED / "radiomics" / "paper.yaml"
    assert "imageType" in load_params(name)


def test_default_radiomics_params_resolve_outside_the_repo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert presets.resolve(Config().features.radiomics_params, kind="radiomics") == \
        PACKAGED / "radiomics" / "paper.yaml"


def test_existing_path_wins(tmp_path, monkeypatch):
    (tmp_path / "demo.yaml").write_text("run: {name: mine}\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert presets.resolve("demo.yaml") == Path("demo.yaml")
    assert load_config("demo.yaml").run.name == "mine"
    assert load_config("demo").data.source == "demo"  # a bare name without a file here: the preset


def test_every_preset_is_listed():
    files = sorted(str(p.relative_to(PACKAGED)) for p in PACKAGED.rglob("*.yaml"))
    assert sorted(presets.available("config") + presets.available("radiomics")) == files
    assert presets.available("config") == ["demo.yaml", "paper.yaml", "table.yaml"]


@pytest.mark.parametrize("name,kind", [("nope", "config"), ("../configs/demo.yaml", "config"),
                                       ("radiomics/nope.yaml", "radiomics"), ("/no/such/demo.yaml", "config")])
def test_unknown_is_one_line_listing_presets(name, kind, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="not found") as e:
        presets.resolve(name, kind=kind)
    msg = str(e.value)
    assert "\n" not in msg and ("demo.yaml" in msg if kind == "config" else "radiomics/paper.yaml" in msg)


def test_table_config_is_packaged():
    from cervirad.cli.classification import TABLE_CONFIG

    assert TABLE_CONFIG == PACKAGED / "table.yaml" and load_config(TABLE_CONFIG).classification.k_grid
