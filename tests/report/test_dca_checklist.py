import numpy as np
import pytest

from cervirad.report.checklist import build_checklist
from cervirad.report.dca import net_benefit, treat_all


def test_net_benefit_by_hand():
    y = np.array([1, 1, 0, 0, 0])
    p = np.array([0.9, 0.4, 0.6, 0.2, 0.1])
    # pt = 0.5: called = {0.9, 0.6}: TP=1, FP=1 -> 1/5 - 1/5 * 0.5/0.5 = 0
    # pt = 0.3: called = {0.9, 0.4, 0.6}: TP=2, FP=1 -> 2/5 - 1/5 * 0.3/0.7
    nb = net_benefit(y, p, np.array([0.5, 0.3]))
    assert np.allclose(nb, [0.0, 0.4 - 0.2 * 0.3 / 0.7])
    assert np.allclose(treat_all(y, np.array([0.5])), [0.4 - 0.6])


def test_perfect_model_beats_treat_all():
    y = np.array([1, 0, 1, 0, 0, 0])
    th = np.linspace(0.05, 0.9, 10)
    assert np.all(net_benefit(y, y.astype(float), th) >= treat_all(y, th) - 1e-12)
    assert np.allclose(net_benefit(y, y.astype(float), th), y.mean())


def test_checklist_marks_unknowns_for_the_user():
    items = build_checklist({"fingerprint": {"n_patients": 10, "class_counts": {"6": 5}}, "splits": {"train": ["a"]},
                             "config": {"preprocess": {"spacing": [1, 1, 3]}}, "feature_counts": {"shape": 14}})
    status = {i["ref"]: i["status"] for i in items}
    assert status["TRIPOD+AI 17"] == "user"  # ethics
    assert status["TRIPOD+AI 10 / CLEAR 12"] == "not_reported"  # the sample-size statement is the team's
    assert status["TRIPOD+AI 12e, 23a / CLEAR 52"] == "missing"
    assert status["TRIPOD+AI 12e / CLEAR 31"] == "missing"  # no classification metrics: not hard-coded "filled"


def _facts(smote: bool, **report) -> dict:
    return {"config": {"classification": {"smote": smote, "calibration": "prior", "models": ["lr"]},
                       "report": report},
            "cls_metrics": {"ci_method": "per metric", "best_model_rule": "rule"}}


def test_checklist_items_follow_the_config():
    """Issue 23: flipping classification.smote changes the class-imbalance item (it was hard-coded)."""
    def item(items, ref):
        return next(i for i in items if i["ref"] == ref)

    on, off = build_checklist(_facts(True)), build_checklist(_facts(False))
    imb_on, imb_off = item(on, "TRIPOD+AI 13 / CLEAR 37"), item(off, "TRIPOD+AI 13 / CLEAR 37")
    assert "SMOTE inside training folds" in imb_on["evidence"] and "SMOTE" not in imb_off["evidence"]
    assert "smote: false" in imb_off["evidence"]
    assert "SMOTE" in item(on, "TRIPOD+AI 12c / CLEAR 25")["evidence"]
    assert "SMOTE" not in item(off, "TRIPOD+AI 12c / CLEAR 25")["evidence"]


def test_claim_items_and_sample_size_are_config_statements():
    empty = {i["ref"]: i for i in build_checklist(_facts(True))}
    for ref in ("CLAIM 14, 17", "CLAIM 16", "CLAIM 18", "TRIPOD+AI 10 / CLEAR 12"):
        assert empty[ref]["status"] == "not_reported" and "not reported" in empty[ref]["evidence"], ref
    filled = {i["ref"]: i for i in build_checklist(_facts(True, annotators="two radiologists, 8 and 15 years",
                                                          sample_size_statement="all eligible patients 2015-2020"))}
    assert filled["CLAIM 16"]["status"] == "filled" and filled["CLAIM 16"]["evidence"].startswith("two radiologists")
    assert filled["TRIPOD+AI 10 / CLEAR 12"]["status"] == "filled"
    assert filled["CLAIM 18"]["status"] == "not_reported"


def test_tripod_numbers_are_the_published_ones():
    from cervirad.report.checklist import TRIPOD_AI, check_references, tripod_refs

    items = build_checklist(_facts(True))
    refs = {r: i["item"] for i in items for r in tripod_refs(i["ref"])}
    assert set(refs) <= set(TRIPOD_AI)
    # spot checks against the published list (Collins et al., BMJ 2024)
    assert "Eligibility" in refs["6b"] and "imbalance" in refs["13"] and "Ethics" in refs["17"]
    assert "Code" in refs["18f"] and "Limitations" in refs["26"] and "6a" not in refs
    assert TRIPOD_AI["6b"] == "eligibility criteria" and TRIPOD_AI["14"] == "fairness" and len(TRIPOD_AI) == 52
    with pytest.raises(ValueError, match="published TRIPOD"):
        check_references([{"ref": "TRIPOD+AI 28", "item": "x"}])


def test_net_benefit_band_is_stratified_by_the_category():
    from cervirad.report.dca import net_benefit_band

    y = np.array([1] * 6 + [0] * 14)
    th = np.linspace(0.05, 0.8, 8)
    # a perfect model: every stratified resample keeps the prevalence, so the band is the prevalence itself
    lo, hi = net_benefit_band(y, y.astype(float), th, n_boot=200, seed=0)
    assert np.allclose(lo, 0.3) and np.allclose(hi, 0.3)
    p = np.random.default_rng(1).uniform(0, 1, y.size) * 0.5 + 0.4 * y
    lo, hi = net_benefit_band(y, p, th, n_boot=200, seed=0)
    nb = net_benefit(y, p, th)
    assert (lo <= hi).all() and (hi - lo).max() > 0.05 and ((lo <= nb + 1e-12) & (nb <= hi + 1e-12)).mean() >= 0.75
