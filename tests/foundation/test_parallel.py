"""The one Dask helper: features and classification fail alike on an unreachable scheduler."""
from __future__ import annotations

import pytest

from cervirad import parallel
from cervirad.config import ExecutionConfig
from cervirad.errors import ConfigError
from cervirad.features.cases import CaseJob, run_jobs

UNREACHABLE = "tcp://127.0.0.1:1"


def test_unreachable_scheduler_same_error_for_features_and_classification(monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.setattr(parallel, "CONNECT_TIMEOUT_S", 1.0)
    job = CaseJob("P001", "t2w", "image.nii.gz", "mask.nii.gz", {}, None, {"histogram_bins": 256}, 1e-3)
    with pytest.raises(ConfigError) as features_err:
        list(run_jobs([job], 2, "dask", UNREACHABLE, fn=lambda j: {}))
    with pytest.raises(ConfigError) as classify_err:
        with parallel.parallel_backend(ExecutionConfig(n_jobs=2, backend="dask", scheduler_address=UNREACHABLE)):
            pass
    msg = str(features_err.value)
    assert msg == str(classify_err.value)
    assert UNREACHABLE in msg and "execution.scheduler_address" in msg and "\n" not in msg
