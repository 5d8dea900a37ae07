"""Stage wiring shared by the CLI commands: cohort resolution, validation, preprocess.

Every stage that reads images calls :func:`ensure_valid_cohort` first; validation is
skipped when ``run.json`` records a successful validation of the same files and settings.
"""
from __future__ import annotations

import logging

from .cohort import cohort_from_config
from .config import Config
from .io import Cohort
from .rundir import RunDir, write_json

log = logging.getLogger(__name__)


def cohort_key(cfg: Config, cohort: Cohort) -> str:
    """Identity of the cohort files (path, size, mtime) and the data settings."""
    from .config import hash_obj

    files = []
    for p in cohort.patients:
        for f in [*p.images.values(), p.mask]:
            if f is not None and f.exists():
                st = f.stat()
                files.append((str(f), st.st_size, int(st.st_mtime)))
    extra = [str(cohort.clinical_path)] + ([cohort.clinical.to_csv()] if cohort.clinical is not None else [])
    return hash_obj({"data": cfg.to_dict()["data"], "files": files, "clinical": extra})


def validate_stage(cfg: Config, run: RunDir, require_labels: bool = True, cohort: Cohort | None = None) -> dict:
    from .validate import validate_cohort

    cohort = cohort or cohort_from_config(cfg, run.path)
    with run.stage("validate", key=cohort_key(cfg, cohort)) as st:
        fp = validate_cohort(cohort, cfg.data, require_labels=require_labels, n_threads=cfg.execution.workers)
        write_json(st.path("fingerprint.json"), fp)
        st.info["n_patients"] = fp["n_patients"]
    for w in fp["warnings"][:5]:
        log.info("validate: %s", w)
    return fp


def ensure_valid_cohort(cfg: Config, run: RunDir) -> Cohort:
    """Load the cohort and validate it unless an identical validation already passed."""
    cohort = cohort_from_config(cfg, run.path)
    if not run.is_current("validate", cohort_key(cfg, cohort)) or not (run.path / "fingerprint.json").is_file():
        validate_stage(cfg, run, require_labels=True, cohort=cohort)
    return cohort


def preprocess_stage(cfg: Config, run: RunDir) -> dict:
    from . import preprocess

    cohort = ensure_valid_cohort(cfg, run)
    return preprocess.run(cfg, run, cohort, n_jobs=cfg.execution.workers)


# --------------------------------------------------------------------------- run-all
def preprocess_key(cfg: Config, cohort: Cohort) -> str:
    from .config import hash_obj

    d = cfg.to_dict()
    return hash_obj({"cohort": cohort_key(cfg, cohort), "preprocess": d["preprocess"],
                     "channels": d["segmentation"]["input_sequences"], "seed": cfg.run.seed})


RUN_ALL_STAGES = ("validate", "preprocess", "train-seg", "features", "features-predicted", "classify", "report")


def _stage_keys(cfg: Config, run: RunDir, cohort: Cohort) -> dict[str, str]:
    """Input keys of every stage; each includes the keys of the stages it reads from."""
    from .config import hash_obj

    d = cfg.to_dict()
    keys: dict[str, str] = {"validate": cohort_key(cfg, cohort)}
    keys["preprocess"] = preprocess_key(cfg, cohort)
    keys["train-seg"] = hash_obj({"pre": keys["preprocess"], "seg": d["segmentation"], "seed": cfg.run.seed})
    keys["features"] = hash_obj({"pre": keys["preprocess"], "feat": d["features"], "data": d["data"]})
    keys["features-predicted"] = hash_obj({"feat": keys["features"], "seg": keys["train-seg"]})
    keys["classify"] = hash_obj({"feat": keys["features-predicted"], "cls": d["classification"],
                                 "seed": cfg.run.seed})
    keys["report"] = hash_obj({"cls": keys["classify"], "report": d["report"]})
    return keys


def run_stage(name: str, cfg: Config, run: RunDir) -> None:
    if name == "validate":
        validate_stage(cfg, run, require_labels=True)
    elif name == "preprocess":
        preprocess_stage(cfg, run)
    elif name == "train-seg":
        from .segmentation import run_train

        run_train(cfg, run, resume=True)
    elif name == "features":
        from .features import run as extract

        extract(cfg, run, "manual")
    elif name == "features-predicted":
        from .features import run as extract

        extract(cfg, run, "predicted")
    elif name == "classify":
        from .classification import run as classify

        classify(cfg, run)
    elif name == "report":
        from .report import build_report

        with run.stage("report") as st:
            build_report(run, cfg.report.dca_category, out_dir=st.staging)


def run_all(cfg: Config, run: RunDir, start: str | None = None, force: bool = False) -> dict[str, float]:
    """Every stage in order on the one split; skip stages whose input keys are unchanged.

    ``start`` redoes that stage and every later one; ``force`` redoes all. A stage killed
    half-way has no recorded key, so the next call redoes it (training resumes from its
    last checkpoint). Returns the wall time of each stage that ran.
    """
    import time

    from .errors import ConfigError

    if start is not None and start not in RUN_ALL_STAGES:
        raise ConfigError(f"Unknown stage '{start}' for --from; choose one of {', '.join(RUN_ALL_STAGES)}.")
    cohort = cohort_from_config(cfg, run.path)
    first = RUN_ALL_STAGES.index(start) if start else (0 if force else len(RUN_ALL_STAGES))
    keys = _stage_keys(cfg, run, cohort)
    times: dict[str, float] = {}
    for i, name in enumerate(RUN_ALL_STAGES):
        done = run.read_run_json().get("pipeline", {}).get(name)
        if i < first and done == keys[name]:
            log.info("run-all: %-18s unchanged, skipped", name)
            continue
        t0 = time.perf_counter()
        run_stage(name, cfg, run)
        times[name] = round(time.perf_counter() - t0, 1)
        info = run.read_run_json()
        info.setdefault("pipeline", {})[name] = keys[name]
        info.setdefault("pipeline_seconds", {})[name] = times[name]
        write_json(run.run_json, info)
        log.info("run-all: %-18s done in %6.1f s", name, times[name])
    return times
