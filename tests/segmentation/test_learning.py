"""Does the network learn? A tiny synthetic overfit (slow) and a few steps on real MRI (realdata:
T1w sarcoma volumes with expert masks from ../shared/data/ibsi_sts_mri, 2 volumes x 2 slices)."""
import numpy as np
import pytest
import SimpleITK as sitk
import torch

from cervirad.config import PreprocessConfig, SegmentationConfig
from cervirad.preprocess import prepare_volume
from cervirad.segmentation.losses import SegLoss
from cervirad.segmentation.model import build_model, predict_proba
from tests.conftest import require_shared


def _synthetic(n=8, size=64, seed=0):
    """Bright irregular discs on smooth noisy background; the mask is the disc."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    imgs, masks = [], []
    for _ in range(n):
        cy, cx, r = rng.uniform(18, 46), rng.uniform(18, 46), rng.uniform(6, 12)
        m = ((yy - cy) ** 2 + (xx - cx) ** 2) < r * r
        img = rng.normal(0, 0.3, (size, size)) + 1.5 * m
        imgs.append(img[None])
        masks.append(m)
    return torch.tensor(np.array(imgs), dtype=torch.float32), torch.tensor(np.array(masks), dtype=torch.float32)


@pytest.mark.slow
def test_overfits_tiny_synthetic_set():
    torch.manual_seed(0)
    x, y = _synthetic(n=8, size=48)
    model = build_model("crfe", 1, lstm_hidden=16)
    loss_fn = SegLoss(SegmentationConfig(), 1.0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    dice = 0.0
    for step in range(1, 151):
        loss = loss_fn(model.train()(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 0:
            p = predict_proba(model.eval(), x) > 0.5
            dice = float(2 * (p & y.bool()).sum() / (p.sum() + y.sum()))
            if dice > 0.9:
                break
    assert dice > 0.9, f"Dice {dice:.3f} after {step} steps"


@pytest.mark.realdata
def test_loss_falls_on_real_mri_slices():
    root = require_shared("ibsi_sts_mri")
    xs, ys = [], []
    for case in ("STS_001", "STS_002"):
        img = sitk.ReadImage(str(root / case / "MR_T1_image.nii.gz"))
        mask = sitk.ReadImage(str(root / case / "MR_T1_mask.nii.gz"))
        cfg = PreprocessConfig(spacing=img.GetSpacing(), slice_size=96)  # native grid: no resampling cost
        prep = prepare_volume([img], cfg, mask)
        area = prep.mask.reshape(len(prep.mask), -1).sum(1)
        k = np.argsort(area)[-2:]  # the two slices with the largest tumour section
        from cervirad.segmentation.data import pad_to

        pairs = [pad_to(prep.image[i], prep.mask[i], 96) for i in k]  # whole slices: a 96 px window at the lesion
        img_k, mask_k = np.stack([a for a, _ in pairs]), np.stack([b for _, b in pairs])
        cy, cx = (int(np.mean(v)) for v in np.nonzero(mask_k.max(axis=0)))
        y0 = int(np.clip(cy - 48, 0, max(0, img_k.shape[2] - 96)))
        x0 = int(np.clip(cx - 48, 0, max(0, img_k.shape[3] - 96)))
        xs.append(img_k[:, :, y0:y0 + 96, x0:x0 + 96])
        ys.append(mask_k[:, y0:y0 + 96, x0:x0 + 96])
    x, y = torch.tensor(np.concatenate(xs)), torch.tensor(np.concatenate(ys), dtype=torch.float32)
    assert y.sum() > 0
    torch.manual_seed(0)
    model = build_model("crfe", 1, lstm_hidden=16).train()
    loss_fn = SegLoss(SegmentationConfig(), 1.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(10):
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-3:]) < 0.85 * np.mean(losses[:3])
