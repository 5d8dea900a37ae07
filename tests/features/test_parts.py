"""Extraction in parts (issue 16): a case cut into shape + one part per image type, run on two
workers and merged, gives exactly the serial result — same keys, same order, same bits."""
from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from cervirad.features.cases import CaseJob, case_parts, extract_case, extract_jobs, extract_part, merge_parts
from cervirad.features.radiomics_ext import image_units, load_params
from tests.conftest import REPO

PARAMS = load_params(REPO / "configs" / "radiomics" / "paper.yaml")


def _case(folder, name: str, radius: float, seed: int, label: int = 1) -> tuple[str, str]:
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:14, :44, :40]
    blob = ((z - 7) / (radius / 3)) ** 2 + ((y - 22) / radius) ** 2 + ((x - 20) / (radius * 0.8)) ** 2 <= 1
    img = sitk.GetImageFromArray((rng.normal(100, 15, blob.shape) + 40 * blob).astype(np.float32))
    msk = sitk.GetImageFromArray((blob * label).astype(np.uint8))
    for im in (img, msk):
        im.SetSpacing((0.8, 0.8, 3.5))
    sitk.WriteImage(img, str(folder / f"{name}_image.nii.gz"))
    sitk.WriteImage(msk, str(folder / f"{name}_mask.nii.gz"))
    return str(folder / f"{name}_image.nii.gz"), str(folder / f"{name}_mask.nii.gz")


def _job(folder, name, radius, seed, label=1):
    img, msk = _case(folder, name, radius, seed, label)
    return CaseJob(name, "t2w", img, msk, PARAMS, ("LLL", "HHH"), {"histogram_bins": 64}, 1e-3, threads=1, key=f"k_{name}")


def _same(a: dict, b: dict) -> bool:
    """Same keys in the same order and bit-identical values (NaN equals NaN)."""
    return list(a) == list(b) and all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in
                                      zip(a.values(), b.values()))


def test_parts_cover_shape_then_every_image_type_in_order(tmp_path):
    job = _job(tmp_path, "a", 9, 0)
    parts = case_parts(job, 3)
    assert [p.unit for p in parts] == [None, *image_units(PARAMS)]
    units = image_units(PARAMS)  # the extractor's order (its parameters pass through sorted JSON)
    assert sorted(u[0] for u in units) == ["Exponential", "LoG", "LoG", "Logarithm", "Original", "Square",
                                           "SquareRoot", "Wavelet"]
    assert [u[1]["sigma"] for u in units if u[0] == "LoG"] == [[1.0], [2.0]]
    assert all(p.case == 3 and p.n_parts == 9 for p in parts)


@pytest.mark.slow
def test_parts_on_two_workers_equal_the_serial_case_to_the_last_bit(tmp_path):
    jobs = [_job(tmp_path, "big", 12, 1), _job(tmp_path, "small", 7, 2), _job(tmp_path, "nolabel", 7, 3, label=2)]
    serial = {j.patient_id: extract_case(j) for j in jobs}
    in_process = merge_parts([extract_part(p) for p in case_parts(jobs[0], 0)])
    parallel = {r["patient_id"]: r for r in extract_jobs(jobs, n_jobs=2)}
    assert set(parallel) == {"big", "small", "nolabel"}
    for pid in ("big", "small"):
        s, p = serial[pid], parallel[pid]
        assert len(s["features"]) == 851 + 9
        assert _same(s["features"], p["features"]), pid
        assert s["diagnostics"] == p["diagnostics"] and s["mask_voxels"] == p["mask_voxels"]
        assert set(p) == set(s) and p["key"] == f"k_{pid}"
    assert _same(serial["big"]["features"], in_process["features"])
    assert parallel["nolabel"]["error"] == serial["nolabel"]["error"]
    assert "has no voxel with label 1" in parallel["nolabel"]["error"]
