"""The table of stages: what each stage reads and writes, what its results depend on, and what runs it.

Each row names the artifacts it writes (:class:`Artifact`: a name and its place in the run folder) and
the artifacts it reads, by name. The orchestrator (:mod:`cervirad.pipeline`) derives from the table
which stage writes what a stage reads (and runs that one first), resolves the names to paths, and
calls the stage function as ``func(cfg, inputs, st, **options)``:

- ``cfg``: the whole configuration (the key covers the row's ``config`` sections only, so a setting of
  another section that changes a stage's results belongs in its row);
- ``inputs``: a :class:`StageInputs`, the artifacts the row reads (and its own earlier results) by name
  (``inputs["features"]``) and as the named paths of :class:`~cervirad.layout.Layout`
  (``inputs.features_table()``), refusing any path outside them (and outside the run's caches);
  ``inputs.cohort`` when the row reads the cohort;
- ``st``: the :class:`~cervirad.rundir.StageContext` it writes into (a staging folder mirroring the run
  folder, promoted on success);
- ``options``: the row's command options (``--features TABLE``, the development run of ``evaluate``).

No stage receives the run folder itself (records, lock) and none imports the orchestrator. A stage's
key covers its config sections, the content of every file outside the run it reads (the cohort's
images, masks, manifest and clinical table; a radiomics parameter file; a feature table), the content
of the artifacts it reads, its options, the seed and the cervirad version. Config keys a row lists as
``scoring`` only change its scores: a change runs the row's ``rescore`` function, not ``func``.

A new stage is one module (its function), one row (:func:`with_stage` inserts it into a table) and one
config section. Stage modules are named by string and imported only when a stage runs, so
``cervirad --help`` stays instant.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .config.schema import Config
from .layout import CACHE, MODEL_JOBLIB, OVERLAYS, Layout
from .layout import RELATIVE as R

Paths = Callable[[Config, dict], tuple[Path, ...]]


def _none(cfg: Config, options: dict) -> tuple[Path, ...]:
    return ()


def _radiomics_params(cfg: Config, options: dict) -> tuple[Path, ...]:
    from .presets import resolve

    return (resolve(cfg.features.radiomics_params, kind="radiomics"),)


@dataclass(frozen=True)
class Artifact:
    """A named artifact: ``where`` (run-relative) is what a reader gets; ``files`` (default: ``where``)
    what its writer owns: removed before the writer's results are promoted, and hashed for its readers."""

    name: str
    where: Path
    files: Paths | None = None

    def owned(self, cfg: Config, options: dict) -> tuple[Path, ...]:
        return tuple(self.files(cfg, options)) if self.files else (self.where,)


@dataclass(frozen=True)
class Stage:
    name: str
    func: str  # "module:function", imported when the stage runs
    writes: tuple[Artifact, ...] = ()  # what it writes (replaced whole when it runs)
    reads: tuple[str, ...] = ()  # artifacts it reads; the stages writing them are brought up to date first
    reads_if_present: tuple[str, ...] = ()  # artifacts it reads when they exist (their stages are not run for it)
    config: tuple[str, ...] = ()  # config sections (dotted paths) its results depend on
    scoring: tuple[str, ...] = ()  # config keys inside those that only change its scores (see `rescore`)
    rescore: str | None = None  # "module:function" run instead of func when only `scoring` keys changed
    files: Paths = _none  # files outside the run whose content it reads (besides the cohort)
    path_keys: tuple[str, ...] = ()  # config keys naming those files: in the key by content, not by path
    reads_cohort: bool = False  # its key covers the cohort's images, masks, manifest and clinical table
    options: tuple[str, ...] = ()  # command options passed to the function and part of the key
    file_options: tuple[str, ...] = ()  # options naming a file: in the key by content, not by path
    resumable: bool = False  # a killed run keeps its staging folder (training checkpoints)
    labels: bool = False  # needs the pathology labels (a clinical table)
    check: str | None = None  # "module:function(cfg)" run before any stage runs: settings fail early
    amends: str | None = None  # a stage (of the main table) whose results it rewrites in part: its record follows

    def checker(self) -> Callable | None:
        return _resolve(self.check) if self.check else None

    def load(self, rescore: bool = False) -> Callable:
        return _resolve(self.rescore if rescore else self.func)

    @property
    def all_reads(self) -> tuple[str, ...]:
        return (*self.reads, *self.reads_if_present)


def _resolve(ref: str) -> Callable:
    import importlib

    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


# --------------------------------------------------------------------------- artifacts
def _manual_features(cfg: Config, options: dict) -> tuple[Path, ...]:
    """features/ files, and features/robustness.csv when features.robustness is on."""
    return (*R.features_files("manual"), *((R.robustness,) if cfg.features.robustness.perturbations else ()))


FINGERPRINT = Artifact("fingerprint", R.fingerprint)
PREPROCESSED = Artifact("preprocess", R.preprocess_dir)
SPLITS = Artifact("splits", R.splits)
PLAN = Artifact("plan", R.plan)
SEGMENTATION = Artifact("segmentation", R.segmentation_dir())
MASKS = Artifact("masks", R.masks_dir())
FEATURES = Artifact("features", R.features_dir("manual"), _manual_features)
FEATURES_PREDICTED = Artifact("features-predicted", R.features_dir("predicted"),
                              lambda cfg, options: tuple(R.features_files("predicted")))
CLASSIFICATION = Artifact("classification", R.classification_dir)
REPORT = Artifact("report", R.report, lambda cfg, options: (R.report, R.report_files))
EXTERNAL_REPORT = Artifact("external-report", R.external_report,
                           lambda cfg, options: (R.external_report, R.report_files))
# written by the orchestrator, not by a stage: the record of what ran (run.json) and the resolved config
RUN_RECORD = Artifact("run-record", R.run_json)
CONFIG_YAML = Artifact("config", R.config_yaml)
KNOWN = (FINGERPRINT, PREPROCESSED, SPLITS, PLAN, SEGMENTATION, MASKS, FEATURES, FEATURES_PREDICTED, CLASSIFICATION,
         REPORT, EXTERNAL_REPORT, RUN_RECORD, CONFIG_YAML)


# the feature stages read the radiomics parameter file: by content, and checked before anything runs
_RADIOMICS = {"files": _radiomics_params, "path_keys": ("features.radiomics_params",),
              "check": "cervirad.features.stage:check_settings"}
# what a report shows: the run's records and every stage's artifacts, where they exist
_REPORTED = ("run-record", "config", "fingerprint", "preprocess", "splits", "plan", "segmentation", "masks", "features",
             "features-predicted", "classification")
# segmentation settings that change only the test scores, not the trained weights or the masks
SEG_SCORING = ("segmentation.bootstrap",)

STAGES: tuple[Stage, ...] = (
    Stage("validate", "cervirad.validate:run_stage", writes=(FINGERPRINT,), config=("data",), reads_cohort=True,
          path_keys=("data.manifest", "data.clinical")),
    Stage("preprocess", "cervirad.preprocess:run", writes=(PREPROCESSED, SPLITS), reads=("fingerprint",),
          config=("preprocess", "segmentation.input_sequences", "segmentation.plan"), reads_cohort=True),
    Stage("plan", "cervirad.segmentation.plan:plan_stage", writes=(PLAN,), reads=("fingerprint",),
          reads_if_present=("splits",), config=("preprocess", "segmentation"), scoring=SEG_SCORING,
          check="cervirad.segmentation.plan:check_settings"),
    Stage("train-seg", "cervirad.segmentation:train_stage", writes=(SEGMENTATION, MASKS),
          reads=("preprocess", "splits", "plan"), config=("segmentation",), scoring=SEG_SCORING,
          rescore="cervirad.segmentation.rescore:rescore_stage", reads_cohort=True, resumable=True),
    Stage("features", "cervirad.features.stage:run_manual", writes=(FEATURES,), reads=("splits",),
          config=("features", "data.batch_column"), reads_cohort=True, **_RADIOMICS),
    Stage("features-predicted", "cervirad.features.stage:run_predicted", writes=(FEATURES_PREDICTED,),
          reads=("splits", "masks"), config=("features", "data.batch_column"), reads_cohort=True, **_RADIOMICS),
    Stage("classify", "cervirad.classification.stage:run", writes=(CLASSIFICATION,), reads=("features", "splits"),
          reads_if_present=("features-predicted",), config=("classification",), labels=True,
          check="cervirad.classification.harmonize:check_settings"),
    Stage("report", "cervirad.report:report_stage", writes=(REPORT,), reads_if_present=_REPORTED, config=("report",)),
)

# `cervirad classify --features TABLE`: a run folder made from one feature table
TABLE_STAGES: tuple[Stage, ...] = (
    Stage("classify", "cervirad.classification.stage:run_table", writes=(CLASSIFICATION,), config=("classification",),
          options=("table", "id_column", "label_column"), file_options=("table",),
          check="cervirad.classification.harmonize:check_settings"),
)


# `cervirad evaluate`: a finished run (option "development") applied unchanged to an external cohort
def _development_models(cfg: Config, options: dict) -> tuple[Path, ...]:
    dev = Layout(options["development"])
    return (dev.seg_model(), dev.classification_dir / MODEL_JOBLIB)


EXTERNAL_STAGES: tuple[Stage, ...] = (
    STAGES[0],
    Stage("segment-external", "cervirad.external:segment_stage", writes=(SEGMENTATION, MASKS), reads=("fingerprint",),
          config=("segmentation",), reads_cohort=True, options=("development",), files=_development_models),
    Stage("features-external", "cervirad.external:features_stage", writes=(FEATURES_PREDICTED, FEATURES),
          reads=("masks",), reads_if_present=("splits",), config=("features", "data.batch_column"), reads_cohort=True,
          options=("development",), **_RADIOMICS),
    Stage("score-external", "cervirad.external:score_stage", writes=(CLASSIFICATION,),
          reads=("features-predicted", "fingerprint"), reads_if_present=("features",), config=("classification",),
          reads_cohort=True,  # the clinical table's labels: a patient whose mask gave no features stays a row
          options=("development", "harmonize"), files=_development_models),
    Stage("report-external", "cervirad.external:report_stage", writes=(EXTERNAL_REPORT,), reads=("classification",),
          reads_if_present=tuple(a for a in _REPORTED if a != "classification"), config=("report",),
          options=("development",)),
)


# `cervirad segment --run-dir [--model M]`: a trained model scores the run's test patients; its masks, overlays and
# metrics become the run's segmentation results (train-seg's: its record gets their hashes, or, for another
# model, says that its results came from elsewhere, so the next run-all retrains)
SEGMENT_RESULTS = Artifact("segmentation-results", R.masks_dir(),
                           lambda cfg, options: (R.masks_dir(), R.segmentation_dir() / OVERLAYS))
SEGMENT_STAGES: tuple[Stage, ...] = (
    *STAGES[:2],
    Stage("segment", "cervirad.segmentation.rescore:segment_stage", writes=(SEGMENT_RESULTS,),
          reads=("preprocess", "splits"), reads_if_present=("segmentation",), config=("segmentation",),
          reads_cohort=True, options=("model", "replace"), file_options=("model",), amends="train-seg"),
)


def with_stage(table: Sequence[Stage], stage: Stage, after: str) -> tuple[Stage, ...]:
    """``table`` with ``stage`` inserted after the row named ``after`` (a new stage's one row)."""
    names = [s.name for s in table]
    i = names.index(after) + 1
    return (*table[:i], stage, *table[i:])


def writers(table: Sequence[Stage]) -> dict[str, tuple[Stage, Artifact]]:
    """Artifact name -> (the stage of ``table`` writing it, the artifact)."""
    out: dict[str, tuple[Stage, Artifact]] = {}
    for s in table:
        for a in s.writes:
            if a.name in out:
                raise ValueError(f"artifact '{a.name}' is written by both '{out[a.name][0].name}' and '{s.name}'")
            out[a.name] = (s, a)
    return out


def artifact_places(table: Sequence[Stage]) -> dict[str, Path]:
    """Artifact name -> run-relative place: cervirad's artifacts (:data:`KNOWN`; an external run reads a split
    it does not write) and every artifact ``table`` writes."""
    return {**{a.name: a.where for a in KNOWN}, **{n: a.where for n, (_, a) in writers(table).items()}}


# --------------------------------------------------------------------------- what a stage receives
_LAYOUT_PATHS = frozenset(n for n, v in vars(Layout).items() if not n.startswith("_") and (
    isinstance(v, property) or callable(v)))


class UndeclaredRead(AttributeError):
    """A stage asked for a path its row does not declare (a programming error, not bad input)."""


class StageInputs(Layout):
    """The artifacts one stage reads, resolved in the run folder ``root``: by name (``inputs["splits"]``)
    and as :class:`~cervirad.layout.Layout`'s named paths, which must lie in (or around) a declared
    artifact or in the run's caches; ``cohort`` when the stage reads the cohort. It holds no record,
    no lock and no way to write: the stage writes into its staging folder."""

    def __init__(self, root: str | Path, stage: str, places: dict[str, Path], cohort: Any = None):
        super().__init__(Path(root))
        self.path = self.root  # for helpers that take the run folder's path (``load_splits(run.path)``)
        self.stage = stage
        self.places = dict(places)
        self.cohort = cohort

    def __getitem__(self, name: str) -> Path:
        if name not in self.places:
            raise UndeclaredRead(f"stage '{self.stage}' does not declare artifact '{name}' (it reads: "
                                 f"{', '.join(self.places) or 'none'}); add it to its row's reads")
        return self.root / self.places[name]

    def __contains__(self, name: str) -> bool:
        return name in self.places

    def __getattribute__(self, name: str):
        value = super().__getattribute__(name)
        if name not in _LAYOUT_PATHS:
            return value
        if callable(value):
            return lambda *a, **k: self._checked(value(*a, **k))
        return self._checked(value)

    def _checked(self, value):
        if isinstance(value, (list, tuple)):
            return type(value)(self._checked(v) for v in value)
        rel = Path(value).relative_to(self.root)
        for where in (*self.places.values(), Path(CACHE)):
            if rel == where or where in rel.parents or rel in where.parents:
                return value
        raise UndeclaredRead(f"stage '{self.stage}' reads '{rel}', which no artifact it declares holds "
                             f"({', '.join(self.places) or 'none'}); add the artifact to its row's reads")

    def require(self, rel: str | Path, hint: str) -> Path:
        """``<run>/<rel>``, or a one-line InputError saying it is missing and what to do (``hint``)."""
        from .errors import InputError

        p = self._checked(self.root / rel)
        if not p.exists():
            raise InputError(f"Run directory '{self.root}' has no '{p.relative_to(self.root)}'; {hint}.")
        return p

    def read_run_json(self) -> dict:
        """The run's record (provenance, what ran): declared as artifact ``run-record``."""
        from .rundir import read_run_json

        return read_run_json(self["run-record"].parent)


def stage_inputs(stage: Stage | str, root: str | Path, cohort: Any = None,
                 table: Sequence[Stage] = STAGES) -> StageInputs:
    """What ``stage`` (a row of ``table``, or its name) receives in the run folder ``root``: its declared reads
    (and what it writes: its own earlier results), resolved; ``cohort`` when it reads the cohort."""
    if isinstance(stage, str):
        stage = next(s for s in table if s.name == stage)
    places = artifact_places(table)
    unknown = [n for n in stage.all_reads if n not in places]
    if unknown:
        raise ValueError(f"stage '{stage.name}' reads artifact '{unknown[0]}', which is no known artifact and no "
                         "stage of its table writes")
    own = {a.name: a.where for a in stage.writes}  # its own earlier results (a rescore reads them)
    return StageInputs(root, stage.name, {**{n: places[n] for n in stage.all_reads}, **own}, cohort)
