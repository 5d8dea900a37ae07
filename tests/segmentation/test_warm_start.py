"""Issue 25: the self-supervised warm start reads only training patients' images; a 2.5-D network
learns on real MRI slices."""
import numpy as np
import pytest

from cervirad.config import with_overrides
from tests.conftest import require_shared


def test_warm_start_never_reads_a_test_patient_or_a_mask(seg_run, tmp_path, monkeypatch):
    from cervirad.splits import load_splits
    from cervirad.segmentation import pretrain as PT
    from cervirad.segmentation.checkpoint import read_checkpoint_any
    from cervirad.segmentation.train import TrainJob

    cfg, run = seg_run
    cfg = with_overrides(cfg, ["segmentation.pretrain_minutes=0.02", "segmentation.context_slices=1"])
    opened = []
    real_load = np.load

    def spy(path, *a, **k):
        opened.append(str(path))
        return real_load(path, *a, **k)

    monkeypatch.setattr(np, "load", spy)
    job = TrainJob(cfg, "crfe", run.path, tmp_path, "key", pretrain_path=tmp_path / "pretrain.pt")
    path = PT.warm_start(job)
    splits = load_splits(run.path)
    assert opened and path.is_file()
    assert not [p for p in opened if any(f"/{t}_" in p or p.endswith(f"{t}_image.npy") for t in splits["test"])]
    assert not [p for p in opened if "mask" in p.rsplit("/", 1)[-1]]
    assert {p.rsplit("/", 1)[-1].rsplit("_image", 1)[0] for p in opened} <= set(splits["train"])
    info = read_checkpoint_any(path)["info"]
    assert info["steps"] > 0 and info["patients"] == sorted(splits["train"])
    opened.clear()
    assert PT.warm_start(job) == path and not opened  # same key: reused, nothing read again
    trainer = job.trainer(progress=False)  # the supervised training starts from the warm-start weights
    w = read_checkpoint_any(path)["state_dict"]
    assert all(np.array_equal(v.numpy(), w[k].numpy()) for k, v in trainer.net.state_dict().items())


def test_inpainting_masks_about_the_requested_share():
    from cervirad.segmentation.pretrain import MASK_RATIO, mask_patches

    m = np.mean([mask_patches((96, 96), np.random.default_rng(i)).mean() for i in range(50)])
    assert abs(m - MASK_RATIO) < 0.05


def _real_slices(n_patients=2, n_slices=6, side=64):
    """Lesion slices of real STS volumes around the lesion centre, z-scored: (S, 1, side, side), (S, side, side)."""
    import SimpleITK as sitk

    root = require_shared("ibsi_sts_mri")
    imgs, msks = [], []
    for pid in ("STS_001", "STS_002")[:n_patients]:
        img = sitk.GetArrayFromImage(sitk.ReadImage(str(root / pid / "MR_T1_image.nii.gz"))).astype(np.float32)
        msk = sitk.GetArrayFromImage(sitk.ReadImage(str(root / pid / "MR_T1_mask.nii.gz"))) > 0
        img = (img - img.mean()) / (img.std() + 1e-6)
        zs = np.flatnonzero(msk.any(axis=(1, 2)))
        zs = zs[np.linspace(1, len(zs) - 2, n_slices).round().astype(int)]
        for z in zs:
            ys, xs = np.nonzero(msk[z])
            cy, cx = int(ys.mean()), int(xs.mean())
            y0 = int(np.clip(cy - side // 2, 0, img.shape[1] - side))
            x0 = int(np.clip(cx - side // 2, 0, img.shape[2] - side))
            imgs.append(img[z - 1:z + 2, y0:y0 + side, x0:x0 + side])  # context 1: z-1, z, z+1
            msks.append(msk[z, y0:y0 + side, x0:x0 + side])
    return np.stack(imgs).astype(np.float32), np.stack(msks).astype(np.float32)


def test_a_25d_crfe_learns_on_real_mri_slices():
    import torch

    from cervirad.segmentation.losses import segmentation_loss
    from cervirad.segmentation.model import build_model

    x, y = _real_slices()
    torch.manual_seed(0)
    net = build_model("crfe", 3, 16)  # 1 sequence x (2·1 + 1) context channels
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def dice() -> float:
        net.eval()
        with torch.no_grad():
            p = torch.sigmoid(net(xt))[:, 0] > 0.5
        net.train()
        return float(2 * (p & (yt > 0)).sum() / (p.sum() + (yt > 0).sum()).clamp(min=1))

    before = dice()
    for _ in range(40):
        loss = segmentation_loss(net(xt), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = dice()
    assert after > before + 0.2 and after > 0.5, (before, after)
