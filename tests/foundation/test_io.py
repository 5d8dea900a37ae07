import numpy as np
import pytest
import SimpleITK as sitk

from cervirad.errors import InputError
from cervirad.io import geometry_mismatch, load_cohort, read_image, read_manifest

from .helpers import volume, write_small_cohort


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_reads_volume_formats(tmp_path, suffix):
    arr = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    path = tmp_path / f"v{suffix}"
    sitk.WriteImage(volume(arr, (0.5, 0.6, 2.0)), str(path))
    img = read_image(path, "P1")
    assert img.GetSize() == (6, 5, 4)
    assert np.allclose(img.GetSpacing(), (0.5, 0.6, 2.0))
    assert np.array_equal(sitk.GetArrayFromImage(img), arr)


def test_reads_dicom_series_folder(tmp_path):
    arr = (np.arange(3 * 8 * 8).reshape(3, 8, 8) % 200).astype(np.int16)
    img = volume(arr, (0.7, 0.7, 4.0))
    series = tmp_path / "dicom"
    series.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(arr.shape[0]):
        sl = img[:, :, z]
        sl.SetMetaData("0020|0032", "\\".join(map(str, img.TransformIndexToPhysicalPoint((0, 0, z)))))
        sl.SetMetaData("0020|0013", str(z + 1))
        sl.SetMetaData("0020|000e", "1.2.826.0.1.3680043.2.1125.1.1")
        sl.SetMetaData("0008|0060", "MR")
        writer.SetFileName(str(series / f"{z:03d}.dcm"))
        writer.Execute(sl)
    out = read_image(series, "P1")
    assert out.GetSize() == (8, 8, 3)
    assert np.allclose(out.GetSpacing()[2], 4.0, atol=1e-3)
    assert np.array_equal(sitk.GetArrayFromImage(out), arr)


def test_missing_and_corrupt_and_2d(tmp_path):
    with pytest.raises(InputError, match=r"Missing image file for case 'P9'"):
        read_image(tmp_path / "nope.nii.gz", "P9")
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a nifti at all")
    with pytest.raises(InputError, match=r"Unreadable image for case 'P9'.*re-export"):
        read_image(bad, "P9")
    flat = tmp_path / "flat.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 8), np.float32)), str(flat))
    with pytest.raises(InputError, match=r"Wrong dimension for image of case 'P9'.*2D, a 3D volume is expected"):
        read_image(flat, "P9")
    with pytest.raises(InputError, match="holds no DICOM series"):
        read_image(tmp_path, "P9")


def test_geometry_mismatch_tolerance():
    a = volume(np.zeros((4, 5, 6), np.float32), (1.0, 1.0, 3.0))
    b = volume(np.zeros((4, 5, 6), np.float32), (1.0, 1.0, 3.0000001))
    c = volume(np.zeros((4, 5, 6), np.float32), (1.0, 1.0, 4.0))
    assert geometry_mismatch(a, b) is None
    assert "spacing" in geometry_mismatch(a, c)


def test_manifest_relative_paths_and_missing_id_column(tmp_path):
    manifest, clinical = write_small_cohort(tmp_path / "c", n=3)
    cohort = load_cohort(manifest, clinical, sequences=("t2w",))
    assert cohort.ids == ["P000", "P001", "P002"]
    assert cohort.patients[0].images["t2w"].is_file() and cohort.patients[0].mask.is_file()
    (tmp_path / "m.csv").write_text("case,t2w\nA,x.nii.gz\n")
    with pytest.raises(InputError, match=r"has no id column 'patient_id' \(columns: case, t2w\)"):
        read_manifest(tmp_path / "m.csv")
