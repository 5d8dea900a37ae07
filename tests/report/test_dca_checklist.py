import numpy as np

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
    assert status["TRIPOD+AI 27"] == "user"
    assert status["TRIPOD+AI 10 / CLEAR 12"] == "filled"
    assert status["TRIPOD+AI 23a / CLEAR 52"] == "missing"


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
