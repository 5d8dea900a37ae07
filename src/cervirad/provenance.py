"""Provenance: what produced a run - cervirad's version and git commit, Python, the platform and the
versions of the packages that decide its numbers. :func:`provenance` is the record a run folder's
``run.json`` carries (:meth:`cervirad.rundir.RunDir.write_provenance`); a model card carries
:func:`package_versions`."""
from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from . import __version__

PACKAGES = (
    "numpy", "scipy", "pandas", "pyarrow", "scikit-learn", "imbalanced-learn", "xgboost", "torch",
    "SimpleITK", "pyradiomics-bhklab", "opencv-python-headless", "typer", "PyYAML", "matplotlib",
    "joblib", "dask", "distributed",
)


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> str | None:
    """The commit of the checkout cervirad runs from (``-dirty`` with uncommitted changes); None outside git."""
    here = Path(__file__).resolve().parent
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if res.returncode != 0:
        return None
    commit = res.stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                           capture_output=True, text=True, timeout=5).stdout.strip()
    return commit + ("-dirty" if dirty else "")


def provenance(config_hash: str, seeds: dict[str, Any]) -> dict[str, Any]:
    """The provenance entries of ``run.json``, in their order: version, config hash, commit, Python,
    platform, package versions and the seeds."""
    return {
        "cervirad_version": __version__,
        "config_hash": config_hash,
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "seeds": seeds,
    }
