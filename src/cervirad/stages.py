"""The table of stages: what each stage reads and writes, what it depends on, and what runs it.

The orchestrator (:mod:`cervirad.pipeline`) only walks this table. A stage's key is the hash
of its config sections, the content of every file it reads (the cohort's images, masks,
manifest and clinical table; a radiomics parameter file; a feature table), the keys of the
stages it reads from, the seed and the cervirad version. A stage function is called as
``func(cfg, run, cohort, st, **options)``: ``st`` is the :class:`~cervirad.rundir.StageContext`
it writes into (staged, promoted on success); it never imports the orchestrator.

Stage modules are named by string and imported only when a stage runs, so ``cervirad --help``
stays instant.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .config import Config
from .layout import MODEL_JOBLIB, Layout
from .layout import RELATIVE as R

Paths = Callable[[Config, dict], tuple[Path, ...]]


def _none(cfg: Config, options: dict) -> tuple[Path, ...]:
    return ()


def _fixed(*paths: Path) -> Paths:
    return lambda cfg, options: tuple(paths)


def _radiomics_params(cfg: Config, options: dict) -> tuple[Path, ...]:
    from .presets import resolve

    return (resolve(cfg.features.radiomics_params, kind="radiomics"),)


@dataclass(frozen=True)
class Stage:
    name: str
    func: str  # "module:function", imported when the stage runs
    needs: tuple[str, ...] = ()  # stages whose outputs it reads; brought up to date first
    uses: tuple[str, ...] = ()  # stages whose outputs it reads when they exist
    config: tuple[str, ...] = ()  # config sections (dotted paths) its results depend on
    outputs: Paths = _none  # run-relative files and folders it writes (folders are replaced whole)
    files: Paths = _none  # files outside the run whose content it reads (besides the cohort)
    path_keys: tuple[str, ...] = ()  # config keys naming those files: in the key by content, not by path
    reads_cohort: bool = False  # its key covers the cohort's images, masks, manifest and clinical table
    options: tuple[str, ...] = ()  # command options passed to the function and part of the key
    file_options: tuple[str, ...] = ()  # options naming a file: in the key by content, not by path
    resumable: bool = False  # a killed run keeps its staging folder (training checkpoints)
    labels: bool = False  # needs the pathology labels (a clinical table)
    check: str | None = None  # "module:function(cfg)" run before any stage runs: settings fail early

    def checker(self) -> Callable | None:
        return _resolve(self.check) if self.check else None

    def load(self) -> Callable:
        return _resolve(self.func)


def _resolve(ref: str) -> Callable:
    import importlib

    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def _manual_features(cfg: Config, options: dict) -> tuple[Path, ...]:
    """features/ files, and features/robustness.csv when features.robustness is on."""
    return (*R.features_files("manual"), *((R.robustness,) if cfg.features.robustness.perturbations else ()))


# the feature stages read the radiomics parameter file: by content, and checked before anything runs
_RADIOMICS = {"files": _radiomics_params, "path_keys": ("features.radiomics_params",),
              "check": "cervirad.features.stage:check_settings"}

STAGES: tuple[Stage, ...] = (
    Stage("validate", "cervirad.validate:run_stage", config=("data",), reads_cohort=True,
          path_keys=("data.manifest", "data.clinical"), outputs=_fixed(R.fingerprint)),
    Stage("preprocess", "cervirad.preprocess:run", needs=("validate",),
          config=("preprocess", "segmentation.input_sequences", "segmentation.plan"), reads_cohort=True,
          outputs=_fixed(R.preprocess_dir, R.splits)),
    Stage("plan", "cervirad.segmentation.plan:plan_stage", needs=("validate",), config=("preprocess", "segmentation"),
          outputs=_fixed(R.plan), check="cervirad.segmentation.plan:check_settings"),
    Stage("train-seg", "cervirad.segmentation:train_stage", needs=("preprocess", "plan"), config=("segmentation",),
          reads_cohort=True, outputs=_fixed(R.segmentation_dir(), R.masks_dir()), resumable=True),
    Stage("features", "cervirad.features.stage:run_manual", needs=("preprocess",),
          config=("features", "data.batch_column"),
          reads_cohort=True, outputs=_manual_features, **_RADIOMICS),
    Stage("features-predicted", "cervirad.features.stage:run_predicted", needs=("preprocess", "train-seg"),
          config=("features", "data.batch_column"), reads_cohort=True, outputs=_fixed(*R.features_files("predicted")), **_RADIOMICS),
    Stage("classify", "cervirad.classification.stage:run", needs=("features",), uses=("features-predicted",),
          config=("classification",), outputs=_fixed(R.classification_dir), labels=True,
          check="cervirad.classification.harmonize:check_settings"),
    Stage("report", "cervirad.report:report_stage",
          uses=("validate", "preprocess", "train-seg", "features", "features-predicted", "classify"),
          config=("report",), outputs=_fixed(R.report, R.report_files)),
)

# `cervirad classify --features TABLE`: a run folder made from one feature table
TABLE_STAGES: tuple[Stage, ...] = (
    Stage("classify", "cervirad.classification.stage:run_table", config=("classification",),
          options=("table", "id_column", "label_column"), file_options=("table",),
          outputs=_fixed(R.classification_dir), check="cervirad.classification.harmonize:check_settings"),
)

# `cervirad evaluate`: a finished run (option "development") applied unchanged to an external cohort
def _development_models(cfg: Config, options: dict) -> tuple[Path, ...]:
    dev = Layout(options["development"])
    return (dev.seg_model(), dev.classification_dir / MODEL_JOBLIB)


EXTERNAL_STAGES: tuple[Stage, ...] = (
    STAGES[0],
    Stage("segment-external", "cervirad.external:segment_stage", needs=("validate",), config=("segmentation",),
          reads_cohort=True, options=("development",), files=_development_models,
          outputs=_fixed(R.segmentation_dir(), R.masks_dir())),
    Stage("features-external", "cervirad.external:features_stage", needs=("segment-external",),
          config=("features", "data.batch_column"),
          reads_cohort=True, options=("development",),
          outputs=_fixed(*R.features_files("predicted"), *R.features_files("manual")), **_RADIOMICS),
    Stage("score-external", "cervirad.external:score_stage", needs=("features-external",),
          config=("classification",), options=("development", "harmonize"), files=_development_models,
          outputs=_fixed(R.classification_dir)),
    Stage("report-external", "cervirad.external:report_stage", needs=("score-external",),
          uses=("segment-external",), config=("report",), options=("development",),
          outputs=_fixed(R.external_report, R.report_files)),
)
