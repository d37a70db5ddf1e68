"""Run a deterministic list of independent work units: in-process, a local process pool, Ray, or one
Slurm-array slice. Curation (download, cutting) and sharding use the same unit functions everywhere.

A unit function must be a module-level function and its units picklable; it must write its own
outputs atomically so that a rerun can skip what is already done. A unit that raises stops the run at
once: units not started are cancelled (the ones running finish), and the error reaches the caller.
"""
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

from vmae.errors import ConfigError

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class ExecutorConfig:
    executor: str = "local"          # local | ray
    workers: int = 1                 # local pool size (1 = run in this process)
    unit_index: Optional[int] = None # with num_units: run only this slice (Slurm arrays)
    num_units: Optional[int] = None

    def __post_init__(self):
        if self.executor not in EXECUTORS:
            raise ConfigError(f"unknown executor {self.executor!r}; choose one of {EXECUTORS}")
        if self.workers < 1:
            raise ConfigError("--workers must be at least 1")
        if (self.unit_index is None) != (self.num_units is None):
            raise ConfigError("--unit-index and --num-units go together")
        if self.num_units is not None and not 0 <= self.unit_index < self.num_units:
            raise ConfigError(f"--unit-index must lie in 0..{self.num_units - 1}")


def my_slice(units: Sequence, cfg: ExecutorConfig) -> list:
    """The units this process runs: all of them, or every num_units-th from unit_index."""
    if cfg.num_units is None:
        return list(units)
    return list(units)[cfg.unit_index::cfg.num_units]


def run_units(fn: Callable, units: Sequence, cfg: ExecutorConfig = ExecutorConfig()) -> Iterator:
    """Run fn on each unit of this process's slice; yield (unit, result) as units finish."""
    units = my_slice(units, cfg)
    if cfg.executor == "ray":
        yield from _run_ray(fn, units)
    elif cfg.workers == 1 or len(units) <= 1:
        for unit in units:
            yield unit, fn(unit)
    else:
        # forkserver: children start from a clean process, not a copy of one holding torch or Ray threads.
        ctx = multiprocessing.get_context("forkserver")
        with ProcessPoolExecutor(max_workers=min(cfg.workers, len(units)), mp_context=ctx) as pool:
            futures = {pool.submit(fn, unit): unit for unit in units}
            try:
                for future in as_completed(futures):
                    yield futures[future], future.result()
            finally:
                for future in futures:
                    future.cancel()


def _run_ray(fn, units):
    try:
        import ray
    except ImportError:
        raise RuntimeError("--executor ray needs Ray: pip install 'vmae[ray]'") from None
    if not ray.is_initialized():
        # RAY_ADDRESS points at an existing cluster; without it Ray starts a local one.
        ray.init(address=os.environ.get("RAY_ADDRESS"), ignore_reinit_error=True, log_to_driver=False)
    remote = ray.remote(fn)
    pending = {remote.remote(unit): unit for unit in units}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                yield pending.pop(ref), ray.get(ref)
    finally:
        for ref in pending:
            ray.cancel(ref)
