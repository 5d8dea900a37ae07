"""Issue 25: 2.5-D context stacking, one lesion per patient, budget split and re-planning."""
import numpy as np
import pytest
import SimpleITK as sitk

from cervirad.config import Config, with_overrides
from cervirad.segmentation.context import context_indices, input_channels, stack_context
from cervirad.segmentation.postprocess import Postprocessing, choose_fallback_threshold, component_at_max


def test_context_stack_matches_a_hand_built_stack_at_the_edges():
    vol = np.arange(5 * 2 * 3 * 3, dtype=np.float32).reshape(5, 2, 3, 3)  # S=5 slices, C=2 sequences
    got = stack_context(vol, [0, 2, 4], 1)
    assert got.shape == (3, input_channels(2, 1), 3, 3) == (3, 6, 3, 3)
    for row, s in enumerate([0, 2, 4]):
        hand = [vol[max(0, s - 1), 0], vol[s, 0], vol[min(4, s + 1), 0],  # sequence 0: s-1, s, s+1 (edges repeat)
                vol[max(0, s - 1), 1], vol[s, 1], vol[min(4, s + 1), 1]]  # then sequence 1
        np.testing.assert_array_equal(got[row], np.stack(hand))
    np.testing.assert_array_equal(context_indices(5, [0, 4], 2), [[0, 0, 0, 1, 2], [2, 3, 4, 4, 4]])
    np.testing.assert_array_equal(stack_context(vol, [3], 0), vol[[3]])  # k = 0: the paper's 2-D input


def test_slice_set_gives_the_context_stack(seg_run):
    from cervirad.segmentation.data import load_slice_set

    _, run = seg_run
    data = load_slice_set(run.path, "train").with_context(2)
    r = data.rows.iloc[0]
    img, _ = data.get(0)
    assert img.shape[0] == data.in_channels == 5 * data.n_channels
    np.testing.assert_array_equal(img, stack_context(data.images[r.patient_id], [r.slice], 2)[0])


def _blobs():
    p = np.zeros((6, 20, 20), np.float32)
    p[1:3, 2:6, 2:6] = 0.9  # confident lesion (mass 0.9 x 32)
    p[3:6, 10:18, 10:18] = 0.55  # a larger, fainter blob (0.55 x 192 > 28.8): by mass it wins
    return p


def test_one_lesion_keeps_a_single_component_and_is_never_empty():
    post = Postprocessing(threshold=0.5, lesions="one", fallback_threshold=0.2)
    out, fb = post.apply(_blobs())
    lab_n = sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray((out > 0.5).astype(np.uint8)),
                                                           True))
    assert not fb and lab_n.max() == 1
    rng = np.random.default_rng(0)
    for _ in range(20):  # nothing above the threshold: the fallback still returns one non-empty component
        p = rng.random((4, 16, 16)).astype(np.float32) * rng.uniform(0.01, 0.49)
        out, fb = post.apply(p)
        assert fb and (out > 0.5).any()
        n = sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray((out > 0.5).astype(np.uint8)),
                                                           True)).max()
        assert n == 1 and out.reshape(-1)[np.argmax(p)] == 1.0
    assert Postprocessing(threshold=0.5, lesions="any").apply(np.zeros((2, 4, 4), np.float32))[0].max() == 0


def test_fallback_threshold_is_the_best_on_validation():
    truth = np.zeros((4, 12, 12), bool)
    truth[1:3, 3:9, 3:9] = True
    p = np.where(truth, 0.25, 0.02).astype(np.float32)
    p[2, 5, 5] = 0.4  # the peak inside the lesion
    best, scores = choose_fallback_threshold([(p, truth)])
    assert best == 0.2 and scores["0.2"] == 1.0 and scores["0.3"] < 1.0
    assert component_at_max(p, 0.3).sum() == 1  # only the peak exceeds 0.3


def test_restoration_never_empties_a_one_lesion_mask():
    from cervirad.segmentation.infer import restore_nonempty

    ref = sitk.Image(40, 40, 10, sitk.sitkFloat32)
    ref.SetSpacing((1.0, 1.0, 3.0))
    from cervirad.config import PreprocessConfig
    from cervirad.preprocess import prepare_volume

    prep = prepare_volume([ref], PreprocessConfig(spacing=(2.0, 2.0, 3.0), normalize="volume"))
    probs = np.zeros(prep.image.shape[:1] + prep.image.shape[2:], np.float32)
    probs[4, 10, 7] = 0.51  # one voxel, diluted below 0.5 by linear restoration onto the finer grid
    from cervirad.preprocess import restore_mask

    assert not sitk.GetArrayFromImage(restore_mask(probs, prep.meta, ref, 0.5)).any()
    assert sitk.GetArrayFromImage(restore_nonempty(probs, prep.meta, ref, 0.5, True)).sum() == 1


def test_budget_is_split_across_the_models_of_the_stage():
    from cervirad.segmentation.budget import budget_split

    cfg = with_overrides(Config(), ["segmentation.budget_minutes=45", "segmentation.also_train_unet=true",
                                   "segmentation.pretrain_minutes=2"])
    split = budget_split(cfg, 5)
    assert split["n_models"] == 10 and split["architectures"] == ["crfe", "unet"]
    total = split["scoring_reserve_minutes"] + 2 * 2 + split["n_models"] * split["model_minutes"]
    assert total == pytest.approx(45, abs=0.01)
    assert budget_split(Config(), 5) is None


def test_plan_writes_the_split_and_a_context_from_the_slice_spacing():
    from cervirad.segmentation import plan as P

    fp = {"n_patients": 30, "n_with_mask": 30, "sequences": {}}
    spac, size = [(1.0, 1.0, 3.3)] * 30, [(200, 200, 40)] * 30
    from tests.segmentation.test_plan import _fp

    plan = P.make_plan(_fp(spac, size), with_overrides(Config(), ["segmentation.budget_minutes=20"]), "cpu", 8 << 30,
                       s_per_sample=0.05)
    assert plan["decisions"]["segmentation.context_slices"]["value"] == 2  # 3.3 mm: 2 neighbours within 8 mm
    assert plan["budget_split"]["n_models"] == 5 and plan["folds"] == 5  # < 40 patients: a 5-fold ensemble
    assert P.plan_context(6.0)[0] == 1 and P.plan_context(9.0)[0] == 0


def test_replan_follows_the_measured_epoch_time():
    from cervirad.segmentation.optim import replanned_epochs

    # planned 10 epochs of 6 s in a 60 s budget; the first real epoch took 12 s: 4 more fit (48 s left)
    assert replanned_epochs(1, 12.0, 12.0, 60.0, 100) == 5
    assert replanned_epochs(1, 3.0, 3.0, 60.0, 100) == 20  # faster than probed: more epochs
    assert replanned_epochs(1, 3.0, 3.0, 60.0, 8) == 8  # never above the config's epochs
    assert replanned_epochs(3, 70.0, 20.0, 60.0, 100) == 3  # never fewer than are done


def test_trainer_replans_when_the_first_epoch_differs_from_the_probe(seg_run, tmp_path):
    from cervirad.segmentation.data import load_slice_set
    from cervirad.segmentation.train import Trainer

    cfg, run = seg_run
    cfg = with_overrides(cfg, ["segmentation.epochs=3", "segmentation.max_val_slices=2",
                              "segmentation.max_train_slices_per_epoch=4"])
    tr = Trainer(cfg, "unet", load_slice_set(run.path, "train"), load_slice_set(run.path, "val"), tmp_path, "k",
                 progress=False, budget_minutes=10.0, max_epochs=50)
    tr.replan(1, 2.0, 2.0, 600.0)  # 2 s per epoch measured against a plan of 3 epochs in 10 min
    assert tr.epochs == 50
    lr0 = tr.optimizer.param_groups[0]["lr"]
    tr.scheduler.step()
    assert tr.optimizer.param_groups[0]["lr"] == pytest.approx(lr0 * 0.5 * (1 + np.cos(np.pi / 50)))


def test_report_counts_the_fallback_cases_and_names_the_context():
    from cervirad.report.segmentation_recipe import input_post_html

    html = input_post_html({"inference": {"context_slices": 2}, "n_patients": 7, "n_lesion_fallback": 1,
                            "postprocessing": {"lesions": "one", "fallback_threshold": 0.2, "n_val_patients": 5}})
    assert "2 context slice(s)" in html and "1 of 7 test patients" in html and "0.200" in html
    assert "fallback" not in input_post_html({"inference": {"context_slices": 0}, "postprocessing": {"lesions": "any"}})
