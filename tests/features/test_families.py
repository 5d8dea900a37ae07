"""A feature family is one entry in features/families.py: a toy family added there (and nowhere
else) is extracted in both execution paths, counted, keyed in the cache and ablated as its own source."""
from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from cervirad.classification.ablation import source_of, sources
from cervirad.features import families
from cervirad.features.cases import case_key, case_parts, extract_case, extract_part, merge_parts
from cervirad.features.stage import category, column_counts
from tests.features.test_parts import _job


def toy_quantile(image: np.ndarray, roi: np.ndarray, q: float) -> dict[str, float]:
    """The toy family: one quantile of the lesion's intensities."""
    return {"toy_quantile": float(np.quantile(np.asarray(image)[roi.astype(bool)], q))}


TOY = families.Family("toy", "toy_", f"{__name__}:toy_quantile", {"toy_q": "toy_q"})


@pytest.fixture
def with_toy(monkeypatch):
    monkeypatch.setattr(families, "FAMILIES", (*families.FAMILIES, TOY))


def _toy_job(tmp_path, q: float = 0.9):
    job = _job(tmp_path, "a", 8, 0)
    return replace(job, params={"imageType": {"Original": {}}, "featureClass": {"firstorder": ["Mean"]},
                                "setting": {"label": 1}},
                   family_settings={"histogram_bins": 64, "toy_q": q}, subbands=None)


def test_a_family_added_to_the_table_is_extracted_counted_and_ablated(tmp_path, with_toy):
    job = _toy_job(tmp_path)
    whole = extract_case(job)
    assert "error" not in whole, whole.get("error")
    names = list(whole["features"])
    assert names[-10:-1] == [f"hist_{k}" for k in ("mean", "std", "skewness", "kurtosis", "energy", "entropy",
                                                     "median", "mode", "iqr")]
    assert names[-1] == "toy_quantile" and whole["features"]["toy_quantile"] > 100  # lesion is brighter
    merged = merge_parts([extract_part(p) for p in case_parts(job, 0)])
    assert list(merged["features"]) == names and merged["features"]["toy_quantile"] == whole["features"]["toy_quantile"]

    assert category("t2w_toy_quantile", ("t2w",)) == "toy" and category("hist_mean") == "histogram"
    counts = column_counts(["clin_age", "original_firstorder_Mean", "hist_mean", "toy_quantile"])
    assert counts["toy"] == 1 and counts["histogram"] == 1 and counts["firstorder"] == 1 and counts["total"] == 4
    assert source_of("toy_quantile") == "toy" and sources()[-1] == "toy"


def test_a_family_setting_is_read_from_the_config_and_keys_the_cache(tmp_path, with_toy):
    settings = families.family_settings(SimpleNamespace(histogram_bins=64, toy_q=0.5))
    assert settings == {"histogram_bins": 64, "toy_q": 0.5}
    assert families.cache_fields(settings) == {"bins": 64, "toy_q": 0.5}
    job = _toy_job(tmp_path, 0.5)
    assert case_key(job) != case_key(replace(job, family_settings={"histogram_bins": 64, "toy_q": 0.9}))


def test_without_the_toy_the_table_is_the_papers():
    assert families.names() == ("histogram",) and sources() == ("clinical", "radiomics", "histogram")
    assert category("toy_quantile") == "other" and "toy" not in column_counts(["toy_quantile"])
