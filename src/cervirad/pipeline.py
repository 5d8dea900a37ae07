"""Stage wiring shared by the CLI commands: cohort resolution, validation, preprocess.

Every stage that reads images calls :func:`ensure_valid_cohort` first; validation is
skipped when ``run.json`` records a successful validation of the same files and settings.
"""
from __future__ import annotations

import logging
import os

from .cohort import cohort_from_config
from .config import Config
from .io import Cohort
from .rundir import RunDir, write_json

log = logging.getLogger(__name__)


def _n_jobs(cfg: Config) -> int:
    j = cfg.execution.n_jobs
    return max(1, os.cpu_count() or 1) if j in (-1, 0) else j


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
        fp = validate_cohort(cohort, cfg.data, require_labels=require_labels, n_threads=_n_jobs(cfg))
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
    return preprocess.run(cfg, run, cohort, n_jobs=_n_jobs(cfg))


# --------------------------------------------------------------------------- run-all
def preprocess_key(cfg: Config, cohort: Cohort) -> str:
    from .config import hash_obj

    d = cfg.to_dict()
    return hash_obj({"cohort": cohort_key(cfg, cohort), "preprocess": d["preprocess"],
                     "channels": d["segmentation"]["input_sequences"], "seed": cfg.run.seed})
