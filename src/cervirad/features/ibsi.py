"""IBSI-1 check: PyRadiomics features on the IBSI digital phantom against the IBSI reference values.

:data:`IBSI_TAGS` maps each PyRadiomics feature that has an IBSI-1 counterpart to its IBSI tag
(3D, texture features averaged over the 13 directions, "3D_avg", where IBSI distinguishes).
Pass rule: ``|value - reference| <= max(tolerance, rounding)`` where ``rounding`` is half a unit of
the reference's third significant digit (IBSI publishes 3 significant digits; the digital
phantom's tolerance is 0, so "match" means "equal at the reference's rounding", as in the IBSI
compliance tables). Known, documented deviations are listed
in :data:`DEVIATIONS` with the reason and the transform that makes the value comparable; a
deviation counts as explained when the transformed value passes.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Callable

import pandas as pd

_CLASS_TAGS = {
    "shape": {"MeshVolume": "morph_volume", "VoxelVolume": "morph_vol_approx", "SurfaceArea": "morph_area_mesh",
              "SurfaceVolumeRatio": "morph_av", "Sphericity": "morph_sphericity", "Maximum3DDiameter": "morph_diam",
              "MajorAxisLength": "morph_pca_maj_axis", "MinorAxisLength": "morph_pca_min_axis",
              "LeastAxisLength": "morph_pca_least_axis", "Elongation": "morph_pca_elongation",
              "Flatness": "morph_pca_flatness"},
    "firstorder": {"Mean": "stat_mean", "Variance": "stat_var", "Skewness": "stat_skew", "Kurtosis": "stat_kurt",
                   "Median": "stat_median", "Minimum": "stat_min", "10Percentile": "stat_p10",
                   "90Percentile": "stat_p90", "Maximum": "stat_max", "InterquartileRange": "stat_iqr",
                   "Range": "stat_range", "MeanAbsoluteDeviation": "stat_mad",
                   "RobustMeanAbsoluteDeviation": "stat_rmad", "Energy": "stat_energy",
                   "RootMeanSquared": "stat_rms", "Entropy": "ih_entropy", "Uniformity": "ih_uniformity"},
    "glcm": {"Autocorrelation": "cm_auto_corr_3D_avg", "JointAverage": "cm_joint_avg_3D_avg",
             "ClusterProminence": "cm_clust_prom_3D_avg", "ClusterShade": "cm_clust_shade_3D_avg",
             "ClusterTendency": "cm_clust_tend_3D_avg", "Contrast": "cm_contrast_3D_avg",
             "Correlation": "cm_corr_3D_avg", "DifferenceAverage": "cm_diff_avg_3D_avg",
             "DifferenceEntropy": "cm_diff_entr_3D_avg", "DifferenceVariance": "cm_diff_var_3D_avg",
             "JointEnergy": "cm_energy_3D_avg", "JointEntropy": "cm_joint_entr_3D_avg",
             "Imc1": "cm_info_corr1_3D_avg", "Imc2": "cm_info_corr2_3D_avg", "Idm": "cm_inv_diff_mom_3D_avg",
             "Idmn": "cm_inv_diff_mom_norm_3D_avg", "Id": "cm_inv_diff_3D_avg", "Idn": "cm_inv_diff_norm_3D_avg",
             "InverseVariance": "cm_inv_var_3D_avg", "MaximumProbability": "cm_joint_max_3D_avg",
             "SumEntropy": "cm_sum_entr_3D_avg", "SumSquares": "cm_joint_var_3D_avg"},
    "glrlm": {"ShortRunEmphasis": "rlm_sre", "LongRunEmphasis": "rlm_lre", "GrayLevelNonUniformity": "rlm_glnu",
              "GrayLevelNonUniformityNormalized": "rlm_glnu_norm", "RunLengthNonUniformity": "rlm_rlnu",
              "RunLengthNonUniformityNormalized": "rlm_rlnu_norm", "RunPercentage": "rlm_r_perc",
              "GrayLevelVariance": "rlm_gl_var", "RunVariance": "rlm_rl_var", "RunEntropy": "rlm_rl_entr",
              "LowGrayLevelRunEmphasis": "rlm_lgre", "HighGrayLevelRunEmphasis": "rlm_hgre",
              "ShortRunLowGrayLevelEmphasis": "rlm_srlge", "ShortRunHighGrayLevelEmphasis": "rlm_srhge",
              "LongRunLowGrayLevelEmphasis": "rlm_lrlge", "LongRunHighGrayLevelEmphasis": "rlm_lrhge"},
    "glszm": {"SmallAreaEmphasis": "szm_sze", "LargeAreaEmphasis": "szm_lze", "GrayLevelNonUniformity": "szm_glnu",
              "GrayLevelNonUniformityNormalized": "szm_glnu_norm", "SizeZoneNonUniformity": "szm_zsnu",
              "SizeZoneNonUniformityNormalized": "szm_zsnu_norm", "ZonePercentage": "szm_z_perc",
              "GrayLevelVariance": "szm_gl_var", "ZoneVariance": "szm_zs_var", "ZoneEntropy": "szm_zs_entr",
              "LowGrayLevelZoneEmphasis": "szm_lgze", "HighGrayLevelZoneEmphasis": "szm_hgze",
              "SmallAreaLowGrayLevelEmphasis": "szm_szlge", "SmallAreaHighGrayLevelEmphasis": "szm_szhge",
              "LargeAreaLowGrayLevelEmphasis": "szm_lzlge", "LargeAreaHighGrayLevelEmphasis": "szm_lzhge"},
    "gldm": {"SmallDependenceEmphasis": "ngl_lde", "LargeDependenceEmphasis": "ngl_hde",
             "GrayLevelNonUniformity": "ngl_glnu", "DependenceNonUniformity": "ngl_dcnu",
             "DependenceNonUniformityNormalized": "ngl_dcnu_norm", "GrayLevelVariance": "ngl_gl_var",
             "DependenceVariance": "ngl_dc_var", "DependenceEntropy": "ngl_dc_entr",
             "LowGrayLevelEmphasis": "ngl_lgce", "HighGrayLevelEmphasis": "ngl_hgce",
             "SmallDependenceLowGrayLevelEmphasis": "ngl_ldlge", "SmallDependenceHighGrayLevelEmphasis": "ngl_ldhge",
             "LargeDependenceLowGrayLevelEmphasis": "ngl_hdlge", "LargeDependenceHighGrayLevelEmphasis": "ngl_hdhge"},
    "ngtdm": {"Coarseness": "ngt_coarseness", "Contrast": "ngt_contrast", "Busyness": "ngt_busyness",
              "Complexity": "ngt_complexity", "Strength": "ngt_strength"},
}
_SUFFIX = {"glrlm": "_3D_avg", "glszm": "_3D", "gldm": "_3D", "ngtdm": "_3D"}
IBSI_TAGS: dict[str, str] = {
    f"original_{cls}_{name}": tag + ("" if tag.endswith(("_avg", "_3D")) else _SUFFIX.get(cls, ""))
    for cls, names in _CLASS_TAGS.items() for name, tag in names.items()
}



def _population_axis(v: float, f: dict) -> float:
    """sqrt(N / (N - 1)) * v, N = number of voxels (VoxelVolume / voxel volume, 2 mm phantom voxels)."""
    n = f["original_shape_VoxelVolume"] / PHANTOM_VOXEL_MM3
    return v * (n / (n - 1)) ** 0.5


PHANTOM_VOXEL_MM3 = 8.0
_AXIS_REASON = ("PyRadiomics takes PCA axes from the population covariance (divides by N), the IBSI reference "
                "matches the sample covariance (N - 1): value * sqrt(N / (N - 1))")
# feature -> (reason, transform(value, all features) applied before comparing)
DEVIATIONS: dict[str, tuple[str, Callable[[float, dict], float]]] = {
    "original_firstorder_Kurtosis": ("PyRadiomics reports kurtosis, IBSI excess kurtosis: value - 3",
                                     lambda v, f: v - 3.0),
    "original_shape_MajorAxisLength": (_AXIS_REASON, _population_axis),
    "original_shape_MinorAxisLength": (_AXIS_REASON, _population_axis),
    "original_shape_LeastAxisLength": (_AXIS_REASON, _population_axis),
}


def within(value: float, reference: float, tolerance: float) -> bool:
    """IBSI pass rule, with the reference's 3-significant-digit rounding as the least tolerance."""
    rounding = 0.5 * 10 ** (math.floor(math.log10(abs(reference))) - 2) if reference else 0.0
    return abs(value - reference) <= max(tolerance, rounding) + 1e-12


def read_reference(path: str | Path) -> dict[str, tuple[float, float]]:
    """IBSI tag -> (reference value, tolerance) from an IBSI-1 reference CSV (rows without a value skipped)."""
    out = {}
    with open(path, newline="", encoding="utf-8-sig") as fh:
        for row in csv.DictReader(fh):
            if row["reference value"].strip() and row["tolerance"].strip():
                out[row["tag"]] = (float(row["reference value"]), float(row["tolerance"]))
    return out


def compare(features: dict[str, float], reference: dict[str, tuple[float, float]]) -> pd.DataFrame:
    """One row per mapped feature: value, reference, tolerance, ``match`` and, for documented deviations,
    the transformed value and whether it ``explained`` the difference."""
    rows = []
    for name, tag in IBSI_TAGS.items():
        if tag not in reference or name not in features:
            continue
        ref, tol = reference[tag]
        value = float(features[name])
        row = {"feature": name, "ibsi_tag": tag, "value": value, "reference": ref, "tolerance": tol,
               "match": within(value, ref, tol), "deviation": "", "value_transformed": None, "explained": None}
        if name in DEVIATIONS:
            reason, fn = DEVIATIONS[name]
            fixed = fn(value, features)
            row.update(deviation=reason, value_transformed=fixed, explained=within(fixed, ref, tol))
        rows.append(row)
    return pd.DataFrame(rows)


def run_check(phantom_dir: str | Path, reference_csv: str | Path, params_path: str | Path) -> pd.DataFrame:
    """Extract the phantom with cervirad's extraction path and compare with the reference."""
    from .cases import CaseJob, extract_case
    from .radiomics_ext import load_params

    phantom_dir = Path(phantom_dir)
    job = CaseJob("ibsi_digital_phantom", "image", str(phantom_dir / "image" / "phantom.nii.gz"),
                  str(phantom_dir / "mask" / "mask.nii.gz"), load_params(params_path), None, {"histogram_bins": 256}, 1e-3)
    res = extract_case(job)
    if "error" in res:
        raise RuntimeError(res["error"])
    return compare(res["features"], read_reference(reference_csv))
