"""The config's schema: one frozen dataclass per pipeline stage section, and :class:`Config`, all of them.

The defaults are the paper's settings (``../shared/SPEC.md``); each annotation is the type a value
must have (checked at load by :mod:`.checks`; a config is made by :mod:`.loading`). The classifier
and network names a config may use come from their registries (:mod:`cervirad.classifiers`,
:mod:`cervirad.networks`). This module imports neither the checks nor the YAML loader, so a stage
that only needs the types stays on a low import floor.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import yaml

from ..classifiers import CLASSIFIERS, SELECTORS, default_grids
from ..files import hash_obj
from ..networks import AUTO, NETWORKS

# segmentation.compare: a registered network; segmentation.model: one, or auto (the best of them)
NetworkName = Literal[tuple(NETWORKS)]
SegmentationModel = Literal[(*NETWORKS, AUTO)]


# --------------------------------------------------------------------------- sections
@dataclass(frozen=True)
class RunConfig:
    name: str = "run"
    seed: int = 42
    runs_root: str = "runs"


@dataclass(frozen=True)
class DataConfig:
    # "demo": generate the synthetic demo cohort into <run>/cohort; "manifest": use your files.
    source: Literal["demo", "manifest"] = "demo"
    manifest: Optional[str] = None
    clinical: Optional[str] = None
    id_column: str = "patient_id"
    sequences: tuple[str, ...] = ("t2w", "dwi", "adc")
    mask_column: Optional[str] = "mask"
    # the three binary pathology columns of the clinical table (SPEC §1)
    large_column: str = "large_cell"
    non_keratinizing_column: str = "non_keratinizing"
    adenocarcinoma_column: str = "adenocarcinoma"
    # tolerance (relative, on spacing/origin/direction) for "same grid" checks (validate, extract-features)
    geometry_tolerance: float = 1e-3
    # the lesion's label in a multi-label mask (null: masks must be binary 0/1)
    mask_label: Optional[int] = None
    # the ROI (RTSTRUCT) or segment (DICOM-SEG) of a DICOM contour mask: an exact name or a regular
    # expression matching the whole name, case-insensitive (null: the file's only ROI/segment)
    mask_roi: Optional[str] = None
    demo_patients: int = 100
    demo_seed: int = 7
    # the demo cohort's scanners: 2 puts some patients on a second scanner (other intensity scale, noise and
    # resolution; another class mix) and adds a `scanner` column to its clinical table (issue 24)
    demo_scanners: int = 1
    # the scanner / site / protocol of each patient (the ComBat batch): a column of the clinical table or the
    # manifest, or `auto` = DICOM Manufacturer + ManufacturerModelName + MagneticFieldStrength; null = none
    batch_column: Optional[str] = None
    # validate warns when a batch has fewer patients than this (ComBat's estimates get noisy)
    batch_min_patients: int = 20


@dataclass(frozen=True)
class SplitConfig:
    train: float = 0.70
    val: float = 0.15
    test: float = 0.15
    stratify: bool = True


@dataclass(frozen=True)
class PreprocessConfig:
    # output spacing (x, y, z) in mm; B-spline for images, nearest neighbour for masks
    spacing: tuple[float, float, float] = (0.7, 0.7, 4.0)
    # z-score statistics over the whole volume or over the body (voxels above an Otsu threshold)
    normalize: Literal["volume", "body"] = "volume"
    # slices are cut along this patient axis of the canonical (LPS) grid; spacing is (column, row, thickness)
    slice_axis: Literal["axial", "coronal", "sagittal"] = "axial"
    # side of the square training patches (slices are stored whole; see segmentation.train_crop)
    slice_size: int = 256
    split: SplitConfig = field(default_factory=SplitConfig)


@dataclass(frozen=True)
class AugmentationConfig:
    rotation_deg: float = 15.0
    flip_horizontal: bool = True
    flip_vertical: bool = True
    scale_min: float = 0.9
    scale_max: float = 1.1
    noise_sd: float = 0.01
    # nnU-Net's intensity and shape augmentations, each applied with this probability per slice (0 = off,
    # the paper's; the plan switches them on). Their ranges are nnU-Net's (segmentation/augment.py).
    elastic_p: float = 0.0  # elastic deformation (same displacement field for image and mask)
    gamma_p: float = 0.0  # gamma in [0.7, 1.5] on the image rescaled to [0, 1]
    brightness_p: float = 0.0  # multiplicative brightness in [0.75, 1.25]
    contrast_p: float = 0.0  # contrast in [0.75, 1.25] about the mean
    lowres_p: float = 0.0  # low-resolution simulation: downsampled by [0.5, 1], back up (cubic)
    blur_p: float = 0.0  # Gaussian blur, sigma [0.5, 1.0] px


@dataclass(frozen=True)
class SizePriorConfig:
    enabled: bool = False
    weight: float = 0.1
    min_diameter_mm: float = 10.0
    max_diameter_mm: float = 40.0


@dataclass(frozen=True)
class SegmentationConfig:
    # the run's network: crfe (the paper's), unet, deeplabv3, or auto = train every network of
    # ``compare`` (empty: all three) on the same split and keep the highest validation Dice
    model: SegmentationModel = "crfe"
    # networks trained beside the run's model on the same split (each in segmentation/<name>/, all in the
    # report's comparison table); with model auto, the candidates
    compare: tuple[NetworkName, ...] = ()
    # sequences stacked as input channels (1 = T2W; 3 = T2W + DWI + ADC)
    input_sequences: tuple[str, ...] = ("t2w",)
    lstm_hidden: int = 256
    # CRFE's bidirectional LSTM scans the pooled bottleneck along its rows only, or along its rows and
    # then the columns of the result (ReNet: every position sees the whole slice; higher validation Dice
    # on the demo and the 18 STS volumes at equal budget, issue 16); stored in model.pt
    recurrence: Literal["rows", "rows+cols"] = "rows+cols"
    epochs: int = 100
    batch_size: int = 4
    lr: float = 1e-3
    # adam (the paper's) or sgd (nnU-Net's: Nesterov momentum 0.99, weight decay 3e-5, gradient norm <= 12)
    optimizer: Literal["adam", "sgd"] = "adam"
    # cosine annealing to 0 (the paper's), poly decay lr·(1 - e/epochs)^0.9 (nnU-Net's), or constant
    scheduler: Literal["cosine", "poly", "none"] = "cosine"
    # derive the training recipe from the cohort fingerprint (plan.yaml: spacing, patch, batch, epochs,
    # optimiser, sampling, augmentation, folds; segmentation/plan.py); a key set in the config to other than
    # its default wins over the plan. false = the fixed recipe of the config (paper.yaml)
    plan: bool = True
    # settings the plan leaves as configured even where they hold their default, e.g.
    # [segmentation.folds, segmentation.optimizer] (dotted keys the plan decides; see plan.yaml)
    plan_keep: tuple[str, ...] = ()
    # wall-clock minutes of the WHOLE train-seg stage (every fold model, the U-Net when it trains too, warm start
    # and scoring): the plan splits them across the models (plan.yaml: budget_split), turns each share into
    # epochs from a timing probe, re-plans after the first real epoch, and training stops when a share is spent
    # (null = no limit, epochs as configured)
    budget_minutes: Optional[float] = None
    # share of every training batch forced to contain lesion (nnU-Net's oversampling: the rest are random
    # slices, randomly cropped); null = the paper's sampler (every lesion slice + lesion_free_fraction)
    foreground_oversampling: Optional[float] = None
    early_stopping_patience: int = 10
    early_stopping_min_delta: float = 0.001
    dice_weight: float = 1.0
    bce_weight: float = 1.0
    deep_supervision: bool = False
    deep_supervision_weight: float = 0.3
    size_prior: SizePriorConfig = field(default_factory=SizePriorConfig)
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    # share of lesion-free slices among training slices each epoch (0 = lesion slices only)
    lesion_free_fraction: float = 0.25
    # cap on training slices per epoch (None = all)
    max_train_slices_per_epoch: Optional[int] = None
    # side of the square training patches (None = preprocess.slice_size, the paper's 256); the network
    # is fully convolutional, so validation and inference always run on whole slices
    train_crop: Optional[int] = None
    # cap on validation slices scored per epoch for early stopping (None = every val slice)
    max_val_slices: Optional[int] = None
    infer_batch_size: int = 8
    threshold: float = 0.5
    # keep only the connected component with the highest summed probability: "auto" decides on the
    # validation patients after training (kept only if it raises their Dice), "always"/"never" force it
    component_selection: Literal["auto", "always", "never"] = "auto"
    # 2.5-D input: the k neighbouring slices on each side stacked as extra channels of every input sequence
    # (edge slices repeat; segmentation/context.py); 0 = the paper's 2-D. The plan chooses k from the slice
    # spacing when this holds its default; stored in model.pt
    context_slices: int = 0
    # a cohort property: 'one' = one primary tumour per patient (cervix, sarcoma): keep the single 3-D component
    # with the highest summed probability and never return an empty mask (fallback threshold chosen on the
    # validation patients; segmentation/postprocess.py); 'any' = as many lesions as the network finds
    lesions: Literal["one", "any"] = "any"
    # self-supervised warm start: minutes of masked-patch inpainting on the TRAINING patients' slices (no labels)
    # before supervised training, counted inside budget_minutes (segmentation/pretrain.py); 0 = off
    pretrain_minutes: float = 0.0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: Optional[int] = None
    also_train_unet: bool = False
    # U-Net baseline width multiplier on CRFE's 32/64/128 channels (1.0 = 0.57 M parameters); null =
    # the width whose parameter count is closest to CRFE's with the same settings (issue 13 item 13)
    unet_width: Optional[float] = None
    # DeepLabv3's ResNet-18 first-stage width (ResNet's own is 64); null = the width whose parameter count
    # is closest to CRFE's with the same settings (segmentation/deeplab.py)
    deeplab_base: Optional[int] = None
    # test-time mirroring: probabilities averaged over the slice as it is and flipped horizontally,
    # vertically and both ways (each flipped back first); stored in model.pt (segmentation/tta.py)
    tta_mirror: bool = True
    # Gaussian-weighted sliding window (nnU-Net: sigma = patch/8, step = patch/2) over slices larger than
    # the training patch: auto = only then, never = whole slices always (the paper's)
    sliding_window: Literal["auto", "never"] = "auto"
    # affordable inference (segmentation/cost.py): a fold ensemble is kept only when a 60-slice volume takes at
    # most this many seconds on the training machine (else its best member alone); null = always kept
    max_seconds_per_volume: Optional[float] = 30.0
    # k-fold ensemble: 1 = one model on the train/val split; K >= 2 = K models on the train+val patients split
    # into K folds (each fold's held-out part for early stopping), probabilities averaged at inference;
    # the test patients are in no fold (segmentation/folds.py)
    folds: int = 1
    bootstrap: int = 1000
    n_overlays: int = 4
    # the run's predicted masks, also written as DICOM when the patient's image is a DICOM series:
    # nifti (only <id>.nii.gz), dicom-seg and/or rtstruct (next to the NIfTI mask; dicom/export.py)
    export: tuple[Literal["nifti", "dicom-seg", "rtstruct"], ...] = ("nifti",)


@dataclass(frozen=True)
class ClinicalColumnsConfig:
    """Clinical-table column holding each of the paper's 8 clinical variables (SPEC §1)."""

    age: str = "age"
    hpv_status: str = "hpv_status"
    figo_stage: str = "figo_stage"
    lymph_node_metastasis: str = "lymph_node_metastasis"
    lymphovascular_invasion: str = "lymphovascular_invasion"
    invasion_depth_cm: str = "invasion_depth_cm"
    chemotherapy: str = "chemotherapy"
    radiotherapy: str = "radiotherapy"


@dataclass(frozen=True)
class RobustnessConfig:
    """Feature robustness by image/mask perturbation (Zwanenburg et al., Sci Rep 2019): each training
    patient is extracted ``perturbations`` more times from a seeded chain, and every feature gets its
    ICC across them (features/robustness.csv; features/perturbation.py)."""

    perturbations: int = 0  # perturbed extractions per training patient; 0 = off, else >= 2
    volume: bool = True  # mask dilation/erosion by one voxel (each perturbation draws -1, 0 or +1)
    contour: bool = True  # random smooth boundary jitter of the mask
    contour_amplitude: float = 1.0  # its standard deviation, in in-plane voxels
    rotation: bool = True  # in-plane rotation of image and mask about the lesion centre
    rotation_deg: float = 10.0  # the angle is uniform in [-rotation_deg, +rotation_deg]
    translation: bool = True  # sub-voxel shift of image and mask, uniform in [-0.5, 0.5] voxel per axis
    noise: bool = True  # additive Gaussian noise
    noise_fraction: float = 1.0  # its sd as a fraction of the image's noise sd (wavelet MAD estimate)


@dataclass(frozen=True)
class FeaturesConfig:
    # native PyRadiomics parameter file (relative paths: to the working directory, else to the repo)
    radiomics_params: str = "configs/radiomics/paper.yaml"
    # wavelet sub-bands kept (PyRadiomics computes all 8; the paper uses the low- and high-pass LLL, HHH)
    wavelet_subbands: tuple[str, ...] = ("LLL", "HHH")
    sequences: tuple[str, ...] = ("t2w",)
    masks: Literal["manual", "predicted"] = "manual"
    histogram_bins: int = 256
    include_treatment: bool = False
    clinical_columns: ClinicalColumnsConfig = field(default_factory=ClinicalColumnsConfig)
    # add clin_<variable>_missing (1 = the clinical cell was missing) next to each clinical variable
    clinical_missing_indicators: bool = False
    # reuse per-case results in <run>/cache/features/ when image, mask and settings are unchanged
    cache: bool = True
    # perturbation robustness of every feature (off unless robustness.perturbations >= 2)
    robustness: RobustnessConfig = field(default_factory=RobustnessConfig)


@dataclass(frozen=True)
class ClassificationConfig:
    # every classifier of the registry (cervirad/classifiers.py) and feature selector, by default
    models: tuple[str, ...] = field(default_factory=lambda: tuple(CLASSIFIERS))
    selectors: tuple[str, ...] = SELECTORS
    k_grid: tuple[int, ...] = (5, 10, 20, 30, 50, 100)
    cv_folds: int = 5
    outer_folds: int = 5
    repeats: int = 1
    scoring: str = "f1_macro"
    smote: bool = True
    near_constant_threshold: float = 0.0
    bootstrap: int = 1000
    # classification.grids.<model>: each model's search grid (the registry's, cervirad/classifiers.py)
    grids: dict[str, dict[str, list]] = field(default_factory=default_grids)
    selector_trees: int = 100  # trees of the random-forest importance selector
    rfe_step: float = 0.1  # share of the remaining features RFE drops per round
    smote_k_neighbors: int = 5  # upper bound; lowered per fold to (smallest class - 1)
    smote_singleton: Literal["random", "none"] = "random"  # one-member class: duplicate it, or leave it
    top_features: int = 30  # bars in the feature-importance figures
    # drop features whose perturbation ICC(1,1) (features/robustness.csv, training patients) is below this,
    # inside every fold before selection; null = off. Needs features.robustness.perturbations >= 2
    min_icc: Optional[float] = None
    permutation_repeats: int = 10
    # probabilities after SMOTE (classification/calibration.py): none | prior (undo SMOTE's class-prior
    # shift) | sigmoid | isotonic (CalibratedClassifierCV around the whole pipeline, on the training rows);
    # default prior: Brier better than none on radMLBench, AUC kept (sigmoid lost 0.06 AUC on small imbalanced
    # tables); numbers in README ("Calibration, Table 1, sub-tasks and sources"), scripts/bench/calibration.py
    calibration: Literal["none", "prior", "sigmoid", "isotonic"] = "prior"
    calibration_folds: int = 3  # stratified folds of the sigmoid / isotonic calibration
    # what to classify: pathologic_typing (the 0..7 category: classification/) and/or the binary
    # sub-tasks large_cell, non_keratinizing, adenocarcinoma (each on the same split and features:
    # classification/targets/<name>/); the main target always runs
    targets: tuple[str, ...] = ("pathologic_typing",)
    # source ablation of the final model (clinical only / radiomics only / histogram only / all):
    # classification/ablation.json
    ablation: bool = False
    # scanner harmonisation of the image features inside every fold (classification/harmonize.py): none (the
    # paper's) | combat (needs data.batch_column); its empirical-Bayes prior, and feature columns (e.g. clin_age)
    # whose effect ComBat keeps (never the label)
    harmonize: Literal["none", "combat"] = "none"
    harmonize_prior: Literal["parametric", "nonparametric"] = "parametric"
    harmonize_covariates: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExecutionConfig:
    n_jobs: int = -1
    backend: Literal["loky", "dask"] = "loky"
    scheduler_address: Optional[str] = None

    @property
    def workers(self) -> int:
        """Worker count: ``n_jobs``, with -1 or 0 meaning every CPU of the machine."""
        return max(1, os.cpu_count() or 1) if self.n_jobs in (-1, 0) else max(1, self.n_jobs)


@dataclass(frozen=True)
class ReportConfig:
    dca_category: Optional[int] = 6
    # statements only the study team can make (issue 23); the report's checklist shows "not reported" while empty:
    # how the reference masks were drawn (CLAIM 14/17), by whom (CLAIM 16), their agreement (CLAIM 18), and
    # how the sample size was arrived at (TRIPOD+AI 10)
    annotation_protocol: str = ""
    annotators: str = ""
    inter_reader_agreement: str = ""
    sample_size_statement: str = ""


@dataclass(frozen=True)
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    classification: ClassificationConfig = field(default_factory=ClassificationConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    # ---------------------------------------------------------------- helpers
    def to_dict(self) -> dict:
        return _to_plain(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    def hash(self) -> str:
        return hash_obj(self.to_dict())



def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    return obj

