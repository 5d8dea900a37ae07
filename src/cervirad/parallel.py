"""The one Dask helper, shared by feature extraction and the classifier searches.

``execution.backend: dask`` connects to ``execution.scheduler_address`` or, when that is
empty, starts a local cluster of ``n`` single-threaded worker processes (radiomics and
scikit-learn are CPU-bound Python, so processes, not threads). Either way the client and
the cluster are closed on exit, and a missing ``distributed`` or an unreachable scheduler
is a one-line :class:`~cervirad.errors.ConfigError`.
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
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


# --------------------------------------------------------------------------- workers end with their parent
WATCH_INTERVAL_S = 0.5


def _watch_parent(parent: int) -> None:
    """Worker initializer: a daemon thread that ends this worker as soon as ``parent`` is gone (its parent pid
    changes when the parent dies, kill -9 included; loky's own shutdown only comes after minutes)."""
    def watch() -> None:
        while True:
            time.sleep(WATCH_INTERVAL_S)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="cervirad-parent-watchdog", daemon=True).start()


def watch_workers() -> None:
    """Make every joblib ``loky`` pool of this process (the default backend, and ``backend="loky"``) start its
    workers with :func:`_watch_parent`: they end with this process, kill -9 included. Called once by the CLI."""
    from joblib import parallel as jp
    from joblib._parallel_backends import LokyBackend

    if getattr(jp.BACKENDS.get("loky"), "watched", False):
        return

    class WatchedLokyBackend(LokyBackend):
        watched = True

        def configure(self, n_jobs=1, parallel=None, **kwargs):
            kwargs.setdefault("initializer", _watch_parent)
            kwargs.setdefault("initargs", (os.getpid(),))
            return super().configure(n_jobs, parallel, **kwargs)

    jp.register_parallel_backend("loky", WatchedLokyBackend)
