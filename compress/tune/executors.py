"""Where trials run: local worker processes (default) or Ray tasks on a cluster. No home-made scheduler.

Example:
    >>> with open_executor("local", workers=2) as pool:
    ...     future = pool.submit(run_trial, spec)
    ...     result = pool.wait_one([future])[0].result()
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import functools
import multiprocessing
import os
from typing import Callable, Iterator

from compress.errors import EnvironmentFailure
from compress.safety.lifeline import die_with_parent


def _start_worker(parent: int, registered: dict) -> None:
    """A worker ends with ``parent`` (none outlives it) and knows the formats, precisions and methods it registered."""
    from compress.backends import install

    die_with_parent(parent)
    install(registered)


def with_registrations(registered: dict, function: Callable, *args):
    """``function(*args)`` in a worker that imports only the built-in records, after registering the driver's formats,
    precisions and methods (``registered``: its ``compress.backends.extensions()``)."""
    from compress.backends import install

    install(registered)
    return function(*args)


def registered_task(registered: dict, function: Callable) -> Callable:
    """``function`` as a Ray task body that runs ``with_registrations`` (named as ``function`` in Ray's timeline)."""
    @functools.wraps(function)
    def task(*args):
        return with_registrations(registered, function, *args)

    return task


class LocalPool:
    def __init__(self, workers: int):
        from compress.backends import extensions

        self.pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                           initializer=_start_worker, initargs=(os.getpid(), extensions()))

    def submit(self, function: Callable, *args, resources: dict | None = None) -> cf.Future:
        return self.pool.submit(function, *args)

    def put(self, value):
        """Large shared arguments: passed as they are (each task pickles its own copy)."""
        return value

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class RayPool:
    """Each trial is a Ray task; ``ObjectRef.future()`` turns it into a concurrent future.

    Nothing assumes a shared filesystem: inputs go through ``put`` (the object store), results come back as values.
    ``resources``: the task's Ray resources (default one CPU), e.g. ``{"num_cpus": 2}``.
    """

    def __init__(self, workers: int, address: str | None):
        try:
            import ray
        except ImportError:
            raise EnvironmentFailure("--executor ray needs Ray: pip install 'compress[ray]'") from None
        from compress.backends import extensions

        self.ray, self.registered = ray, extensions()
        self.owned = not ray.is_initialized()  # shut down only the Ray this pool started
        if self.owned and address:
            try:
                ray.init(address=address, log_to_driver=False)
            except ConnectionError as exc:
                raise EnvironmentFailure(f"--address {address}: {exc}") from None
        elif self.owned:  # shipped models and their artifacts are small: so is the object store
            ray.init(num_cpus=workers, object_store_memory=128 * 1024**2, include_dashboard=False, log_to_driver=False)

    def submit(self, function: Callable, *args, resources: dict | None = None) -> cf.Future:
        options = {"num_cpus": 1, "max_retries": 0, **(resources or {})}
        return self.ray.remote(**options)(registered_task(self.registered, function)).remote(*args).future()

    def put(self, value):
        """One copy in the object store; a task given the reference gets the value on whatever node it runs."""
        return self.ray.put(value)

    def close(self) -> None:
        if self.owned:
            self.ray.shutdown()


@contextlib.contextmanager
def open_executor(kind: str, workers: int, address: str | None = None) -> Iterator[LocalPool | RayPool]:
    pool = RayPool(workers, address) if kind == "ray" else LocalPool(workers)
    try:
        yield pool
    finally:
        pool.close()
