"""Real-scan geometry: any storage order and direction, any field of view, exact mapping back."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from cervirad.config import PreprocessConfig
from cervirad.preprocess import canonical, meta_grid, prepare_volume, restore_mask, soft_mask

from tests.conftest import require_shared


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def sphere(size_xyz, spacing, diameter_mm, centre_mm, origin=(0.0, 0.0, 0.0)) -> sitk.Image:
    z, y, x = np.meshgrid(*[np.arange(n) * s for n, s in zip(size_xyz[::-1], spacing[::-1])], indexing="ij")
    inside = (x - centre_mm[0]) ** 2 + (y - centre_mm[1]) ** 2 + (z - centre_mm[2]) ** 2 <= (diameter_mm / 2) ** 2
    img = sitk.GetImageFromArray(inside.astype(np.uint8))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    return img


def image_of(mask: sitk.Image, seed: int = 0) -> sitk.Image:
    arr = sitk.GetArrayFromImage(mask).astype(np.float32) * 80 + 100
    arr += np.random.default_rng(seed).normal(0, 5, arr.shape).astype(np.float32)
    img = sitk.GetImageFromArray(arr)
    img.CopyInformation(mask)
    return img


def stored_as(img: sitk.Image, order: str) -> sitk.Image:
    """The same physical image stored axial (as is), sagittal or coronal, with flipped axes."""
    if order == "axial":
        return img
    perm = {"sagittal": [1, 2, 0], "coronal": [0, 2, 1]}[order]
    out = sitk.Flip(sitk.PermuteAxes(img, perm), [True, False, True])
    assert out.GetDirection() != img.GetDirection()
    return out


def test_storage_order_is_undone_exactly():
    img = image_of(sphere((40, 36, 12), (0.8, 0.9, 3.0), 12, (15.0, 14.0, 18.0), origin=(-10.0, 5.0, 2.0)))
    ref = sitk.GetArrayFromImage(img)
    for order in ("sagittal", "coronal"):
        copy = stored_as(img, order)
        assert sitk.GetArrayFromImage(copy).shape != ref.shape
        back = canonical(copy)
        assert np.array_equal(sitk.GetArrayFromImage(back), ref) and back.GetOrigin() == pytest.approx(img.GetOrigin())


@pytest.mark.parametrize("slice_axis", ["axial", "coronal", "sagittal"])
def test_sagittal_coronal_axial_copies_give_the_same_prediction(tmp_path, slice_axis):
    from tests.segmentation.test_infer import _checkpoint

    from cervirad.segmentation.infer import load_model, segment_volume

    model = load_model(_checkpoint(tmp_path / "model.pt"), "cpu")
    model.info["preprocess"].update(spacing=[1.0, 1.0, 3.0], slice_axis=slice_axis)
    model.info["threshold"] = 0.5
    mask = sphere((48, 40, 10), (0.9, 0.9, 3.0), 14, (20.0, 18.0, 15.0), origin=(3.0, -7.0, 11.0))
    axial = image_of(mask)
    preds = {}
    for order in ("axial", "sagittal", "coronal"):
        copy = stored_as(axial, order)
        pred = segment_volume(model, [copy], threshold=float(np.median(_probs(model, axial))))
        assert pred.GetSize() == copy.GetSize() and pred.GetDirection() == copy.GetDirection()
        # compare in physical space: back onto the axial copy's grid (an exact reordering)
        preds[order] = sitk.GetArrayFromImage(sitk.Resample(pred, axial, sitk.Transform(),
                                                            sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)) > 0
    assert preds["axial"].any() and not preds["axial"].all()
    for order in ("sagittal", "coronal"):
        assert dice(preds[order], preds["axial"]) >= 0.99, order


def _probs(model, img: sitk.Image) -> np.ndarray:
    from cervirad.segmentation.infer import predict_slices

    return predict_slices(model, prepare_volume([img], model.preprocess_config()).image)[0]


def test_sequences_on_other_grids_and_orientations_share_one_grid():
    """T2W axial at 0.8 mm, DWI stored sagittal on a coarser grid, ADC coronal: three channels, one grid."""
    mask = sphere((60, 50, 12), (0.8, 0.8, 3.0), 15, (24.0, 20.0, 18.0))
    t2w = image_of(mask, 1)
    coarse = sitk.Resample(t2w, [30, 25, 12], sitk.Transform(), sitk.sitkLinear, t2w.GetOrigin(), (1.6, 1.6, 3.0),
                           t2w.GetDirection(), 0.0, sitk.sitkFloat32)
    dwi, adc = stored_as(coarse, "sagittal"), stored_as(image_of(mask, 2), "coronal")
    prep = prepare_volume([t2w, dwi, adc], PreprocessConfig(spacing=(0.8, 0.8, 3.0)), mask)
    assert prep.image.shape == (12, 3, 50, 60)
    inside = prep.mask.astype(bool)
    for c in range(3):  # the lesion is bright on every channel, in the same place
        assert prep.image[:, c][inside].mean() > prep.image[:, c][~inside].mean() + 1.0, c


@pytest.mark.parametrize("diameter", [10, 30])
def test_restore_ceiling_on_an_anisotropic_grid(diameter):
    """A perfect prediction (the mask as the network's grid sees it) comes back with Dice >= 0.99."""
    mask = sphere((200, 200, 30), (0.5, 0.5, 3.0), diameter, (50.3, 50.1, 45.2))
    img = image_of(mask)
    prep = prepare_volume([img], PreprocessConfig(spacing=(0.7, 0.7, 4.0)), mask)
    perfect = soft_mask(mask, meta_grid(prep.meta), "axial")
    back = restore_mask(perfect, prep.meta, img)
    assert back.GetSize() == img.GetSize() and back.GetSpacing() == img.GetSpacing()
    assert dice(sitk.GetArrayFromImage(back) > 0, sitk.GetArrayFromImage(mask) > 0) >= 0.99


def test_a_lesion_at_the_edge_of_a_400_mm_field_of_view_is_kept():
    # 512 x 512 at 0.78 mm (400 mm), oblique in-plane: the lesion sits 4 mm from the right border
    mask = sphere((512, 512, 8), (0.78125, 0.78125, 5.0), 16, (391.0, 200.0, 17.5))
    c, s = np.cos(0.2), np.sin(0.2)
    mask.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
    img = image_of(mask)
    prep = prepare_volume([img], PreprocessConfig(spacing=(0.7, 0.7, 4.0), slice_size=256), mask)
    assert prep.image.shape[2] > 571 and prep.image.shape[3] > 571  # the whole (rotated) field of view
    truth = sitk.GetArrayFromImage(mask) > 0
    lesion_ml = truth.sum() * 0.78125 ** 2 * 5.0 / 1000
    kept_ml = prep.mask.sum() * 0.7 * 0.7 * 4.0 / 1000
    assert kept_ml == pytest.approx(lesion_ml, rel=0.2)  # 5 mm vs 4 mm slices of a 16 mm sphere
    grid = meta_grid(prep.meta)
    for idx in np.argwhere(truth)[:: max(1, int(truth.sum()) // 50)]:  # every lesion voxel inside the grid
        point = mask.TransformIndexToPhysicalPoint([int(i) for i in idx[::-1]])
        inside = grid.TransformPhysicalPointToContinuousIndex(point)
        assert all(-0.5 <= c <= n - 0.5 for c, n in zip(inside, grid.GetSize())), point
    back = sitk.GetArrayFromImage(restore_mask(soft_mask(mask, meta_grid(prep.meta), "axial"), prep.meta, img)) > 0
    assert dice(back, truth) >= 0.97


@pytest.mark.realdata
def test_real_mri_round_trip_through_a_sagittal_copy():
    root = require_shared("ibsi_sts_mri")
    img = sitk.ReadImage(str(root / "STS_003" / "MR_T1_image.nii.gz"))
    mask = sitk.ReadImage(str(root / "STS_003" / "MR_T1_mask.nii.gz"))
    cfg = PreprocessConfig(spacing=(1.0, 1.0, 3.27))
    a = prepare_volume([img], cfg, mask)
    b = prepare_volume([stored_as(img, "sagittal")], cfg, stored_as(mask, "sagittal"))
    assert np.array_equal(a.mask, b.mask) and np.allclose(a.image, b.image, atol=1e-4)
    perfect = soft_mask(mask, meta_grid(a.meta), "axial")
    back = sitk.GetArrayFromImage(restore_mask(perfect, a.meta, img)) > 0
    assert dice(back, sitk.GetArrayFromImage(mask) > 0) >= 0.99
