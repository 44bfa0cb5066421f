"""Where trials run: local worker processes (default) or Ray tasks on a cluster. No home-made scheduler.

Example:
    >>> with open_executor("local", workers=2) as pool:
    ...     future = pool.submit(run_trial, spec)
    ...     result = pool.wait_one([future])[0].result()
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing
from typing import Callable, Iterator

from compress.errors import EnvironmentFailure


class LocalPool:
    def __init__(self, workers: int):
        self.pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))

    def submit(self, function: Callable, *args) -> cf.Future:
        return self.pool.submit(function, *args)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class RayPool:
    """Each trial is a Ray task; ``ray.wait``/``ray.get`` are wrapped into concurrent futures."""

    def __init__(self, workers: int, address: str | None):
        try:
            import ray
        except ImportError:
            raise EnvironmentFailure("--executor ray needs Ray: pip install 'ray>=2.9'") from None
        self.ray = ray
        if not ray.is_initialized():
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)

    def submit(self, function: Callable, *args) -> cf.Future:
        remote = self.ray.remote(num_cpus=1)(function)
        return remote.remote(*args).future()

    def close(self) -> None:
        self.ray.shutdown()


@contextlib.contextmanager
def open_executor(kind: str, workers: int, address: str | None = None) -> Iterator[LocalPool | RayPool]:
    pool = RayPool(workers, address) if kind == "ray" else LocalPool(workers)
    try:
        yield pool
    finally:
        pool.close()
