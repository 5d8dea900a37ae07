"""The one Dask helper, shared by feature extraction and the classifier searches.

``execution.backend: dask`` connects to ``execution.scheduler_address`` or, when that is
empty, starts a local cluster of ``n`` single-threaded worker processes (radiomics and
scikit-learn are CPU-bound Python, so processes, not threads). Either way the client and
the cluster are closed on exit, and a missing ``distributed`` or an unreachable scheduler
is a one-line :class:`~cervirad.errors.ConfigError`.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

from .errors import ConfigError

CONNECT_TIMEOUT_S = 20.0  # seconds to wait for an external scheduler


@contextlib.contextmanager
def dask_client(n_workers: int, address: str | None = None, timeout: float | None = None) -> Iterator[Any]:
    """A ``distributed.Client`` on the scheduler at ``address``, or on a local cluster of ``n_workers``."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError("execution.backend is 'dask' but dask.distributed is not installed; "
                          "pip install 'dask[distributed]' or use execution.backend: loky.") from None
    cluster = None
    if address:
        wait = CONNECT_TIMEOUT_S if timeout is None else timeout
        try:
            client = Client(address, timeout=f"{wait}s")
        except (OSError, TimeoutError) as e:
            raise ConfigError(f"Cannot reach the Dask scheduler at '{address}' ({type(e).__name__}); start it, fix "
                              "execution.scheduler_address, or use execution.backend: loky.") from None
    else:
        cluster = LocalCluster(n_workers=max(1, n_workers), threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


@contextlib.contextmanager
def parallel_backend(execution) -> Iterator[None]:
    """joblib backend for a block (the grid searches): loky as configured, or Dask (:func:`dask_client`)."""
    if execution.backend != "dask":
        yield
        return
    import joblib

    with dask_client(execution.workers, execution.scheduler_address), joblib.parallel_backend("dask"):
        yield
