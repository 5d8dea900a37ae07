"""The orchestrator: walk a stage table (:mod:`cervirad.stages`), run what is out of date.

Every command (``validate`` … ``classify``, ``report``, ``run-all``, ``segment --run-dir``,
``evaluate``, ``classify --features``) goes through :func:`run_stages` with its table and target
stage(s), so one rule decides what runs and ``run.json`` holds one record of it. The stages a
target needs are those writing the artifacts it reads (:func:`schedule`). A stage runs when

- it is forced (``--force``; ``--from S`` forces S and every later stage),
- it never finished (no record, failed, interrupted),
- its key changed (config section, a file's content, the content of an artifact it reads - e.g.
  because the stage writing it ran again and wrote other bytes -, the seed, the version), or
- one of the files it recorded as written is missing or its bytes changed.

When only a row's ``scoring`` keys changed (a bootstrap count), its ``rescore`` function runs
instead: the scores are redone from the stage's recorded results, nothing is retrained. The
orchestrator resolves each stage's declared reads to paths (:func:`cervirad.stages.stage_inputs`)
and records, after it ran, the hashes of the files it owns. Each decision to redo is logged in
one line that says why. A run needing nothing logs one line saying so. The run folder is locked
for the whole invocation.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Sequence

from . import __version__
from .config.schema import Config
from .errors import ConfigError, InputError
from .files import HashCache, hash_obj, read_json
from .io import Cohort, load_cohort
from .layout import CACHE, Layout
from .parallel import watch_workers
from .rundir import RunDir, refuse_inputs_inside
from .stages import STAGES, Artifact, Stage, stage_inputs, writers

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- inputs, once per invocation
class Invocation:
    """What one invocation reads: the config, the table, the cohort (loaded once) and content hashes
    (cached on disk by path, size and mtime, so a rerun reads no file it has hashed before)."""

    def __init__(self, cfg: Config, run: RunDir, options: dict, table: Sequence[Stage] = STAGES):
        self.cfg, self.run, self.options, self.table = cfg, run, options, tuple(table)
        self.writers = writers(self.table)
        self.hashes = HashCache(run.hash_cache)
        self._cohort: Cohort | None = None
        self._cohort_hash: str | None = None
        self._config = cfg.to_dict()

    @property
    def cohort(self) -> Cohort:
        if self._cohort is None:
            cohort = configured_cohort(self.cfg, self.run.path)
            if self.cfg.data.source == "manifest":  # the demo cohort is cervirad's own, in <run>/cohort
                own = self.run.path / CACHE  # masks cervirad derived itself (e.g. from an RTSTRUCT) live there
                refuse_inputs_inside(self.run.path, self.run.flag,
                                     [f for p in cohort.patients for f in (*p.images.values(), p.mask)
                                      if f and own not in Path(f).resolve().parents])
            self._cohort = cohort
        return self._cohort

    def cohort_hash(self) -> str:
        """Content of the clinical table and of every image and mask, by patient and role (not by
        path: a cohort moved to another folder is the same cohort)."""
        if self._cohort_hash is None:
            c = self.cohort
            parts: list = [("clinical", self.hashes.of(Path(c.clinical_path)) if c.clinical_path else None)]
            for p in c.patients:
                roles = {**p.images, "mask": p.mask}
                parts += [(p.id, role, self.hashes.of(Path(f)) if f is not None else None)
                          for role, f in sorted(roles.items())]
            self._cohort_hash = hash_obj(parts)
        return self._cohort_hash

    def config_part(self, dotted: str, drop: tuple[str, ...] = ()):
        """The config value at ``dotted``, without the keys in ``drop`` (full dotted paths)."""
        node = self._config
        for part in dotted.split("."):
            node = node[part]
        inner = [d[len(dotted) + 1:] for d in drop if d.startswith(dotted + ".")]
        if inner:
            node = json.loads(json.dumps(node))
            for key in inner:
                *parents, leaf = key.split(".")
                target = node
                for part in parents:
                    target = target[part]
                target.pop(leaf, None)
        return node

    def components(self, stage: Stage) -> dict:
        """Everything the stage's key covers, each part hashed (stored to explain a redo). An artifact
        it reads counts by the hashes of its files as its writer recorded them, so a stage is redone
        when the bytes it reads change. ``scoring`` keys count apart (only for a row that can rescore)."""
        files = [*stage.files(self.cfg, self.options), *(self.options[k] for k in stage.file_options)]
        opts = {k: str(self.options.get(k)) for k in stage.options if k not in stage.file_options}
        return {
            "config": {sec: hash_obj(self.config_part(sec, (*stage.path_keys, *stage.scoring))) for sec in stage.config},
            "scoring": {k: hash_obj(self.config_part(k)) for k in (stage.scoring if stage.rescore else ())},
            "cohort": self.cohort_hash() if stage.reads_cohort else None,
            "files": {str(Path(p).resolve()): self.hashes.of(Path(p)) for p in files},
            "upstream": {a: self.artifact_state(a) for a in stage.all_reads if a in self.writers},
            "options": opts,
            "seed": self.cfg.run.seed,
            "version": __version__,
        }

    def artifact_state(self, name: str) -> str | None:
        """An artifact as its readers see it: the hashes its writer recorded for its files (None until
        the writer finished)."""
        stage, artifact = self.writers[name]
        return artifact_state(self.run, stage.name, artifact, self.cfg, self.options)

    def owned(self, stage: Stage) -> list[Path]:
        """Run-relative files and folders ``stage`` writes (replaced whole when it runs)."""
        return [p for a in stage.writes for p in a.owned(self.cfg, self.options)]


def artifact_state(run: RunDir, writer: str, artifact: Artifact, cfg: Config, options: dict) -> str | None:
    rec = run.stage_record(writer)
    if rec.get("status") != "done":
        return None
    outputs = rec.get("outputs") or {}
    return hash_obj({str(p): outputs.get(str(p)) for p in artifact.owned(cfg, options)})


def configured_cohort(cfg: Config, run_path: Path) -> Cohort:
    """The cohort ``data`` names: its manifest and clinical table or, for ``data.source: demo``, the demo
    cohort, which the orchestrator writes into ``<run>/cohort`` first (reused when written with the same
    settings). RTSTRUCT / DICOM-SEG masks are rasterised once into the run's cache."""
    d = cfg.data
    if d.source == "demo":
        from .demo import ensure_demo_cohort

        manifest, clinical = ensure_demo_cohort(Layout(run_path).cohort_dir, d.demo_patients, d.demo_seed,
                                                scanners=d.demo_scanners)
    else:
        manifest, clinical = Path(d.manifest), Path(d.clinical) if d.clinical else None
    cohort = load_cohort(manifest, clinical, d.id_column, d.sequences, d.mask_column)
    from .dicom.masks import resolve_contour_masks

    return resolve_contour_masks(cohort, d.mask_roi, Layout(run_path).cache_dir("dicom_masks"))


def stage_key(comps: dict) -> str:
    """The key: every component, files by content only (a moved file with the same bytes is the same)."""
    return hash_obj({**comps, "files": sorted(str(h) for h in comps["files"].values())})


# --------------------------------------------------------------------------- decisions
def schedule(table: Sequence[Stage], targets: Sequence[str]) -> list[Stage]:
    """The targets and every stage writing an artifact they read (transitively), in table order."""
    names = {s.name: s for s in table}
    writer = {a: s.name for a, (s, _) in writers(table).items()}
    want: set[str] = set()
    todo = list(targets)
    while todo:
        n = todo.pop()
        if n not in want:
            want.add(n)
            todo += [writer[a] for a in names[n].reads if a in writer and writer[a] != n]
    return [s for s in table if s.name in want]


_PARTS = {"config": "config section", "scoring": "scoring setting", "files": "file", "upstream": "input artifact",
          "options": "option"}


def _changed_part(old: dict, new: dict, redone: dict[str, str] | None = None) -> str:
    """Why the key changed, in words; ``redone``: artifact -> the stage that rewrote it in this invocation."""
    for part, what in _PARTS.items():
        a, b = old.get(part) or {}, new.get(part) or {}
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        if diff:
            by = [redone[k] for k in diff if part == "upstream" and k in (redone or {})]
            return f"{by[0]} was redone" if by else f"{what} {', '.join(diff)} changed"
    if old.get("cohort") != new.get("cohort"):
        return "the cohort's files changed"
    for part in ("seed", "version"):
        if old.get(part) != new.get(part):
            return f"{part} changed ({old.get(part)} -> {new.get(part)})"
    return "inputs changed"


def reason_to_run(stage: Stage, rec: dict, key: str, comps: dict, hashes: HashCache, run: RunDir,
                  redone: dict[str, str] | None = None) -> str | None:
    """Why the stage must run, or None when its record, key and outputs are all current."""
    status = rec.get("status")
    if status is None:
        return "never ran"
    if status != "done":
        return f"last attempt {status}" if status in ("failed", "interrupted") else "did not finish"
    if rec.get("replaced_by"):
        return f"its results came from another model ({rec['replaced_by']})"
    if rec.get("key") != key:
        return _changed_part(rec.get("inputs") or {}, comps, redone)
    return _output_change(rec, hashes, run)


def _output_change(rec: dict, hashes: HashCache, run: RunDir) -> str | None:
    outputs = rec.get("outputs")
    if outputs is None:
        return "its outputs were never recorded"
    for rel, digest in outputs.items():
        if digest is None:
            continue
        now = hashes.of(run.path / rel)
        if now is None:
            return f"output {rel} is missing"
        if now != digest:
            return f"output {rel} changed"
    return None


def scores_only(stage: Stage, rec: dict, comps: dict, hashes: HashCache, run: RunDir) -> bool:
    """Only the row's scoring settings changed since it finished, and its outputs are intact: rescore it."""
    old = rec.get("inputs") or {}
    if not stage.rescore or rec.get("status") != "done" or rec.get("replaced_by") or not old.get("scoring"):
        return False
    same = all(old.get(k) == v for k, v in comps.items() if k != "scoring")
    return same and old["scoring"] != comps["scoring"] and _output_change(rec, hashes, run) is None


# --------------------------------------------------------------------------- the walk
def run_stages(cfg: Config, run: RunDir, targets: Sequence[str] | None = None, *, force: bool = False,
               start: str | None = None, table: Sequence[Stage] = STAGES, identity: dict | None = None,
               options: dict | None = None, flag: str = "--run-dir") -> dict[str, float]:
    """Bring ``targets`` (default: every stage of ``table``) up to date; returns the wall time of
    each stage that ran. ``force`` redoes the targets; ``start`` redoes that stage and every
    later one of the schedule. ``identity`` (kind and source of the run) is claimed first: a folder
    holding another run's artifacts is refused unless ``force``."""
    names = [s.name for s in table]
    targets = list(targets) if targets else names
    unknown = [t for t in [*targets, *([start] if start else [])] if t not in names]
    if unknown:
        raise ConfigError(f"Unknown stage '{unknown[0]}'; choose one of {', '.join(names)}.")
    options = dict(options or {})
    watch_workers()  # worker processes end with this one, even on kill -9
    with run.session(cfg, identity or cohort_identity(cfg), force, inputs=input_paths(cfg, options), flag=flag):
        return _walk(Invocation(cfg, run, options, table), schedule(table, targets), targets, force, start)


def input_paths(cfg: Config, options: dict | None = None) -> list[Path]:
    """The files and folders a command reads (manifest, clinical table, --features table, the development run):
    none may lie in its output folder (:func:`cervirad.rundir.claim_output_folder`). The cohort's images and
    masks as far as the manifest can be read now (and again when the stages read it: :attr:`Invocation.cohort`)."""
    from .io import read_manifest

    d, options = cfg.data, options or {}
    paths = [d.manifest, d.clinical] if d.source == "manifest" else []
    paths += [options.get("table"), options.get("development")]
    if d.source == "manifest" and d.manifest and Path(d.manifest).is_file():
        try:  # the cohort's files too, before anything is written (a bad manifest is reported by its stage)
            patients, _ = read_manifest(d.manifest, d.id_column, d.sequences, d.mask_column)
            paths += [f for p in patients for f in (*p.images.values(), p.mask)]
        except InputError:
            pass
    return [Path(p) for p in paths if p]


def _walk(inv: Invocation, stages: list[Stage], targets: list[str], force: bool, start: str | None) -> dict[str, float]:
    cfg, run = inv.cfg, inv.run
    order = [s.name for s in stages]
    forced = set(targets) if force else set()
    if start:
        forced |= set(order[order.index(start):]) if start in order else {start}
    ran: dict[str, float] = {}
    for check in dict.fromkeys(s.check for s in stages if s.check):
        next(s for s in stages if s.check == check).checker()(cfg)
    _check_labels(stages, inv)
    for stage in stages:
        comps = inv.components(stage)
        key = stage_key(comps)
        rec = run.stage_record(stage.name)
        redone = {a: inv.writers[a][0].name for a in stage.all_reads
                  if a in inv.writers and inv.writers[a][0].name in ran}
        rescore = False
        if stage.name in forced:
            why = "forced (--force)" if force else f"forced (--from {start})"
        else:
            why = reason_to_run(stage, rec, key, comps, inv.hashes, run, redone)
            rescore = why is not None and scores_only(stage, rec, comps, inv.hashes, run)
        if why is None:
            log.info("%-18s up to date, skipped", stage.name)
            continue
        log.info("%-18s runs: %s%s", stage.name, why, " (scores only: rescored, not rerun)" if rescore else "")
        ran[stage.name] = _run_one(stage, inv, key, comps, fresh=stage.name in forced, rescore=rescore)
        inv.hashes.save()
    if not ran:
        log.info("nothing to redo: %d stage(s) up to date", len(stages))
    inv.hashes.save()
    return ran


def _check_labels(stages: list[Stage], inv: Invocation) -> None:
    """Stages that need the pathology labels fail before anything runs when there are none."""
    need = [s.name for s in stages if s.labels]
    if need and inv.cohort.clinical is None:
        raise InputError(f"Stage(s) {', '.join(need)} need the pathology labels, but the cohort has no clinical "
                         "table; set data.clinical (or --clinical), or run only validate, preprocess, train-seg.")


def _run_one(stage: Stage, inv: Invocation, key: str, comps: dict, fresh: bool, rescore: bool = False) -> float:
    """Run ``stage`` (its ``rescore`` function when ``rescore``: merged into its outputs, nothing replaced)
    on its resolved inputs, in its staging folder; record the hashes of the files it owns."""
    run = inv.run
    func = stage.load(rescore)
    if fresh:  # a forced stage does not resume from an interrupted attempt
        shutil.rmtree(run.partial_dir(stage.name), ignore_errors=True)
    inputs = stage_inputs(stage, run.path, inv.cohort if stage.reads_cohort else None, inv.table)
    owned = inv.owned(stage)
    options = {k: inv.options.get(k) for k in stage.options}
    t0 = time.perf_counter()
    with run.stage(stage.name, key=key, resumable=stage.resumable and not rescore,
                   replace=() if rescore else tuple(owned)) as st:
        st.info["inputs"] = comps
        if stage.rescore:
            st.info["rescored"] = rescore  # scores redone from its results, nothing retrained
        func(inv.cfg, inputs, st, **options)
    seconds = round(time.perf_counter() - t0, 1)
    run.update_stage(stage.name, outputs={str(p): inv.hashes.of(run.path / p) for p in owned})
    if stage.amends:
        _amend(inv, stage.amends, st.info.get("replaced_by"))
    log.info("%-18s done in %6.1f s", stage.name, seconds)
    return seconds


def _amend(inv: Invocation, name: str, replaced_by: str | None) -> None:
    """A stage rewrote part of stage ``name``'s results: its record gets the new hashes; results from
    elsewhere (``replaced_by``) leave it to be redone."""
    rec = inv.run.stage_record(name)
    outputs = {rel: inv.hashes.of(inv.run.path / rel) for rel in rec.get("outputs") or {}}
    if replaced_by:
        inv.run.update_stage(name, outputs=outputs, key=None, replaced_by=replaced_by)
    elif rec:
        inv.run.update_stage(name, outputs=outputs)


# --------------------------------------------------------------------------- identities
def cohort_identity(cfg: Config) -> dict:
    """A run made from a cohort: the demo, or the resolved manifest path."""
    d = cfg.data
    source = "demo" if d.source == "demo" else str(Path(d.manifest).resolve())
    return {"kind": "cohort", "source": source}


def table_identity(table: str | Path) -> dict:
    return {"kind": "table", "source": str(Path(table).resolve())}


def classify_table(cfg: Config, table: str | Path, id_column: str, label_column: str, out_dir: str | Path,
                   force: bool = False) -> dict:
    """``cervirad classify --features TABLE``: a run folder made from one feature table (repeated
    nested CV); returns the classification summary."""
    from .layout import SUMMARY
    from .stages import TABLE_STAGES

    table = Path(table)
    if not table.is_file():
        raise InputError(f"Feature table '{table}' not found; pass an existing CSV or Parquet file.")
    run = RunDir(out_dir)
    run_stages(cfg, run, ["classify"], force=force, table=TABLE_STAGES, identity=table_identity(table),
               options={"table": str(table.resolve()), "id_column": id_column, "label_column": label_column},
               flag="classify --out")
    return read_json(run.classification_dir / SUMMARY)


# --------------------------------------------------------------------------- segment --run-dir
def rescore_segmentation(cfg: Config, run: RunDir, model_path: str | Path | None, force: bool = False) -> dict:
    """``cervirad segment --run-dir``: score a trained model on the run's test patients (stage ``segment`` of
    :data:`cervirad.stages.SEGMENT_STAGES`); returns the run's new segmentation metrics.

    The run's own model refreshes what train-seg recorded (same key). Another model replaces the run's
    segmentation results only with ``force``, and train-seg's record then says so, so that the next
    ``run-all`` retrains the run's own model.
    """
    from .stages import SEGMENT_STAGES

    path = Path(model_path) if model_path else run.seg_model()
    if not path.is_file():
        raise InputError(f"No trained model at '{path}'; run `cervirad train-seg` for this run first or pass "
                         "--model.")
    run_stages(cfg, run, ["segment"], start="segment", table=SEGMENT_STAGES,
               options={"model": str(path.resolve()), "replace": force})
    return read_json(run.seg_metrics())


# --------------------------------------------------------------------------- external validation
def external_config(development: str | Path, cohort_data: dict, name: str) -> Config:
    """The development run's resolved configuration, frozen, with only its ``data`` section replaced
    by the external cohort's (``source: manifest`` and the keys given)."""
    from .config.loading import from_dict, read_yaml_file
    from .layout import RADIOMICS_PARAMS, SAFE_ID

    dev = Layout(development)
    if not dev.config_yaml.is_file():
        raise InputError(f"'{development}' has no config.yaml; pass the --run folder of a finished run-all.")
    frozen = read_yaml_file(dev.config_yaml) or {}
    if not isinstance(frozen, dict) or not isinstance(frozen.get("data", {}), dict):
        raise InputError(f"'{dev.config_yaml}' is not a cervirad config (a mapping of sections); restore it from "
                         "the finished run-all.")
    # the development's scanner column is not the external cohort's: none unless its data section names one
    frozen["data"] = {**frozen.get("data", {}), "source": "manifest", "clinical": None, "batch_column": None,
                      **cohort_data}
    frozen.setdefault("run", {})["name"] = name if SAFE_ID.fullmatch(name) else "external"
    copy = dev.features_dir("manual") / RADIOMICS_PARAMS  # the parameters the development run used, frozen in it
    if copy.is_file():
        frozen.setdefault("features", {})["radiomics_params"] = str(copy.resolve())
    return from_dict(frozen)


def evaluate_external(cfg: Config, development: str | Path, out_dir: str | Path, force: bool = False,
                      harmonize: bool = False) -> dict:
    """``cervirad evaluate``: the finished run ``development`` applied unchanged to ``cfg``'s cohort,
    every artifact in ``out_dir``; returns the score summary. ``harmonize``: ComBat estimates of an unseen
    scanner from its own patients (transductive; :func:`cervirad.external.score_stage`)."""
    from .external import require_finished
    from .layout import SUMMARY
    from .stages import EXTERNAL_STAGES

    dev = Path(development).resolve()
    require_finished(dev)
    run = RunDir(out_dir)
    if run.path == dev:
        raise InputError(f"--out '{out_dir}' is the development run itself; pass another folder.")
    identity = {"kind": "external", "source": str(Path(cfg.data.manifest).resolve()), "development": str(dev)}
    run_stages(cfg, run, table=EXTERNAL_STAGES, identity=identity,
               options={"development": str(dev), "harmonize": harmonize}, force=force, flag="evaluate --out")
    return read_json(run.classification_dir / SUMMARY)
