"""Artifact names and the run folder's layout (SPEC §8). Every name that one module writes and another reads -
the run folder's entries, and the files in them that other stages, the report or ``evaluate`` read - is
spelled here and nowhere else; other modules use these constants or :class:`Layout`'s named paths. A file
that only its own module writes and reads (a figure a summary lists, a cache entry, the demo cohort's files
in ``cohort/``: :mod:`cervirad.demo`) is named in that module::

    runs/<name>/
      run.json          provenance and THE record of what ran: per stage its key, status,
                        wall time, error and the hashes of the files it wrote
      config.yaml       the resolved configuration
      fingerprint.json  cohort fingerprint (validate)
      plan.yaml         the training recipe derived from the fingerprint (plan)
      splits.json       the ONE patient-level split every stage uses (preprocess)
      preprocess/ segmentation/ masks/ features/ classification/ report.html

:class:`Layout` resolves the names below any root: the run folder, a stage's staging folder (which
mirrors it) or ``Path()`` (:data:`RELATIVE`, run-relative paths). :func:`case_file` is the one way a case
id becomes a file name.
"""
from __future__ import annotations

import re
from pathlib import Path

from .errors import InputError, shorten

# a plain name: patient ids and run.name become file and folder names (letters, digits, _ - ., no leading '.')
SAFE_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")

# the run folder's top-level entries
RUN_JSON = "run.json"
CONFIG_YAML = "config.yaml"
LOCK_FILE = ".lock"
PARTIAL = ".partial"
FINGERPRINT = "fingerprint.json"
PLAN = "plan.yaml"
SPLITS = "splits.json"
PREPROCESS = "preprocess"
SEGMENTATION = "segmentation"
MASKS = "masks"
FEATURES = "features"
CLASSIFICATION = "classification"
REPORT = "report.html"
EXTERNAL_REPORT = "external_report.html"
REPORT_FILES = "report_files"
CACHE = "cache"
COHORT = "cohort"
# files inside the stage folders that other stages or the report read
SUMMARY = "summary.json"
METRICS = "metrics.json"
METRICS_PREDICTED = "metrics_predicted.json"
PER_PATIENT = "per_patient.csv"
COMPARISON = "comparison.csv"
TRAIN_LOG = "train_log.csv"
CURVES = "curves.png"
OVERLAYS = "overlays"
MODEL_PT = "model.pt"
LAST_PT = "last.pt"
PRETRAIN_PT = "pretrain.pt"  # a network's self-supervised warm-start weights (segmentation/pretrain.py)
FOLD_DIR = "fold_{}"
FOLD_CURVES = "fold_curves.png"
FEATURES_TABLE = "features.parquet"
FEATURES_CSV = "features.csv"
DIAGNOSTICS = "diagnostics.csv"
ERRORS = "errors.csv"
COLUMN_COUNTS = "column_counts.json"
COLUMNS = "columns.json"
MODEL_JOBLIB = "model.joblib"
MODEL_CARD = "model_card.json"
MODELS = "models"
MODEL_FILE = "{}.joblib"  # models/<model>.joblib: each tuned classifier (the best is copied to model.joblib)
PREDICTIONS = "predictions.csv"
PREDICTIONS_PREDICTED = "predictions_predicted.csv"
CONFUSION = "confusion_matrices.json"
FIGURES = "figures"
# issue 13's paper results in classification/: Table 1 (baseline characteristics per split and class),
# the binary sub-tasks (targets/<target>/ each a full set of the files above, targets.json side by side),
# the source ablation and importance share (ablation.json)
TABLE1 = "table1.csv"
TARGETS = "targets"
TARGETS_SUMMARY = "targets.json"
ABLATION = "ablation.json"
FEATURE_FILES = (FEATURES_TABLE, FEATURES_CSV, DIAGNOSTICS, ERRORS, COLUMN_COUNTS, COLUMNS)
# feature robustness (features.robustness, classification.min_icc): features/robustness.csv (perturbation ICC
# on the training patients), classification/agreement.csv (manual- vs predicted-mask ICC on the test patients),
# classification/robust_filter.json (the filter's threshold, kept features, test metrics with and without it)
ROBUSTNESS = "robustness.csv"
AGREEMENT = "agreement.csv"
ROBUST_FILTER = "robust_filter.json"
# features/radiomics_params.yaml: the run's frozen copy of features.radiomics_params (evaluate reuses it);
# shift.json in an evaluate --out folder: the shift check against the development run
RADIOMICS_PARAMS = "radiomics_params.yaml"
SHIFT = "shift.json"
# classification/figures/: the classify stage's PNGs (classification/figures.py), per model where named "{}"
ROC_PNG = "roc_{}.png"
CONFUSION_PNG = "confusion_{}.png"
MODEL_COMPARISON_PNG = "model_comparison.png"
CALIBRATION_PNG = "calibration.png"
IMPORTANCE_PNG = "feature_importance.png"
CORRELATION_PNG = "correlation.png"
# classification/harmonization.json: the scanner effect with and without ComBat (data.batch_column)
HARMONIZATION = "harmonization.json"
# report_files/: the report's own figures (the decision curve of one category, the perturbation ICC)
DCA_PNG = "dca_category_{}.png"
ICC_PNG = "robustness_icc.png"

# every top-level entry of a run folder that cervirad owns: a user's file inside one of them would be replaced or
# deleted by the next run, so no command writes a user-chosen output there (:func:`cervirad.rundir.refuse_inside_run`)
RUN_ENTRIES = (RUN_JSON, CONFIG_YAML, LOCK_FILE, PARTIAL, FINGERPRINT, PLAN, SPLITS, PREPROCESS, SEGMENTATION, MASKS,
               FEATURES, CLASSIFICATION, REPORT, EXTERNAL_REPORT, REPORT_FILES, CACHE, COHORT)


def case_file(folder: str | Path, case: str, suffix: str) -> Path:
    """``<folder>/<case><suffix>``: the one way a case id becomes a file name. An id that is not a
    plain name (letters, digits, ``_ - .``, no leading dot) or would leave ``folder`` is refused."""
    folder = Path(folder)
    path = folder / f"{case}{suffix}"
    if not SAFE_ID.fullmatch(str(case)) or path.resolve().parent != folder.resolve():
        raise InputError(f"Case id {shorten(str(case))!r} cannot name a file (allowed: letters, digits, '_', '-', '.', no "
                         "leading '.'); rename the case in the manifest or input folder.")
    return path


class Layout:
    """Named paths of a run's artifacts below ``root``: the run folder itself, a stage's staging
    folder (which mirrors it), or ``Path()`` for run-relative paths."""

    def __init__(self, root: str | Path = ""):
        self.root = Path(root)

    @property
    def run_json(self) -> Path:
        return self.root / RUN_JSON

    @property
    def config_yaml(self) -> Path:
        return self.root / CONFIG_YAML

    @property
    def fingerprint(self) -> Path:
        return self.root / FINGERPRINT

    @property
    def plan(self) -> Path:
        return self.root / PLAN

    @property
    def splits(self) -> Path:
        return self.root / SPLITS

    @property
    def preprocess_dir(self) -> Path:
        return self.root / PREPROCESS

    @property
    def preprocess_summary(self) -> Path:
        return self.root / PREPROCESS / SUMMARY

    @property
    def slices_dir(self) -> Path:
        return self.root / PREPROCESS / "slices"

    @property
    def slices_index(self) -> Path:
        return self.root / PREPROCESS / "slices.csv"

    def slice_file(self, pid: str, kind: str) -> Path:
        """``preprocess/slices/<pid>_<kind>.npy`` (kind: image | mask)."""
        return case_file(self.slices_dir, pid, f"_{kind}.npy")

    def meta_file(self, pid: str) -> Path:
        return case_file(self.root / PREPROCESS / "meta", pid, ".json")

    def segmentation_dir(self, arch: str = "crfe") -> Path:
        """'segmentation' for CRFE, 'segmentation/<arch>' for a baseline."""
        return self.root / SEGMENTATION if arch == "crfe" else self.root / SEGMENTATION / arch

    def masks_dir(self, arch: str = "crfe") -> Path:
        """Predicted test masks: 'masks' (read by the feature stage) for CRFE, else under the model's folder."""
        return self.root / MASKS if arch == "crfe" else self.segmentation_dir(arch) / MASKS

    def seg_model(self, arch: str = "crfe") -> Path:
        return self.segmentation_dir(arch) / MODEL_PT

    def seg_metrics(self, arch: str = "crfe") -> Path:
        return self.segmentation_dir(arch) / METRICS

    def fold_dir(self, fold: int, arch: str = "crfe") -> Path:
        """One fold of a k-fold ensemble: 'segmentation[/<arch>]/fold_<k>' (checkpoints, log, curves, and
        for fold 0 its own test scores and masks)."""
        return self.segmentation_dir(arch) / FOLD_DIR.format(fold)

    def features_dir(self, masks: str = "manual") -> Path:
        return self.root / FEATURES if masks == "manual" else self.root / FEATURES / "predicted"

    def features_table(self, masks: str = "manual") -> Path:
        return self.features_dir(masks) / FEATURES_TABLE

    def features_files(self, masks: str = "manual") -> list[Path]:
        return [self.features_dir(masks) / f for f in FEATURE_FILES]

    @property
    def robustness(self) -> Path:
        """Perturbation ICC per feature on the training patients (features.robustness on)."""
        return self.features_dir("manual") / ROBUSTNESS

    @property
    def classification_dir(self) -> Path:
        return self.root / CLASSIFICATION

    @property
    def report(self) -> Path:
        return self.root / REPORT

    @property
    def external_report(self) -> Path:
        return self.root / EXTERNAL_REPORT

    @property
    def report_files(self) -> Path:
        return self.root / REPORT_FILES

    def cache_dir(self, kind: str) -> Path:
        return self.root / CACHE / kind

    @property
    def hash_cache(self) -> Path:
        """Content hashes of files read, by (path, size, mtime): :class:`HashCache`."""
        return self.cache_dir("hashes") / "files.json"

    @property
    def cohort_dir(self) -> Path:
        return self.root / COHORT


RELATIVE = Layout()
