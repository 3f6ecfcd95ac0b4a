"""Report jobs and the executors that run them (local processes, this process, Dask).

One job is one (checkpoint, dataset) study; its id hashes everything that changes the numbers,
so finished jobs are reused on resume. Workers only compute and return; the parent process
writes every file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from analysis._workers import init_worker
from analysis.report.config import CheckpointSpec, ReportConfig
from analysis.settings import StudyConfig

__all__ = ["Job", "plan_jobs"]


@dataclasses.dataclass(frozen=True)
class Job:
    """One (checkpoint, dataset) study; ``job_id`` names its cache files."""

    job_id: str
    checkpoint: CheckpointSpec
    dataset: str
    study: StudyConfig

    def label(self) -> str:
        return f"{self.checkpoint.name} on {Path(self.dataset).name}"


def _safe(text: str) -> str:
    """A file-name part without dots (stems get suffixes appended with Path.with_suffix)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "x"


def plan_jobs(config: ReportConfig) -> tuple[list[Job], list[str]]:
    """The jobs of ``config`` in their deterministic order, and notes on skipped pairs.

    With ``pairing = "trained"`` a checkpoint with a card runs on the dataset it was trained on
    (if listed) and a checkpoint without one on every listed dataset; with ``"all"`` every
    checkpoint runs on every dataset. Jobs are ordered by (dataset, checkpoint name).
    """
    jobs: list[Job] = []
    notes: list[str] = []
    for ckpt in config.checkpoints:
        targets = list(config.datasets)
        if config.pairing == "trained" and ckpt.trained_on is not None:
            targets = [d for d in targets if d == ckpt.trained_on]
            if not targets:
                notes.append(f"{ckpt.name} skipped: trained on {ckpt.trained_on!r}, which is not in "
                             f"datasets.names (set datasets.pairing = 'all' to run it anyway)")
        for ds in targets:
            study = dataclasses.replace(config.study, dataset=ds)
            if ckpt.gray_to_rgb is not None:
                study = dataclasses.replace(study, gray_to_rgb=ckpt.gray_to_rgb)
            ident = json.dumps({"spec": ckpt.spec, "sha256": ckpt.sha256, "arch": ckpt.arch,
                                "mean": ckpt.mean, "std": ckpt.std, "size": ckpt.size,
                                "study": study.key()}, sort_keys=True)
            digest = hashlib.sha256(ident.encode()).hexdigest()[:12]
            job_id = f"{_safe(ckpt.name)}--{_safe(Path(ds).stem if os.sep in ds else ds)}--{digest}"
            jobs.append(Job(job_id=job_id, checkpoint=ckpt, dataset=ds, study=study))
    jobs.sort(key=lambda j: (j.dataset, j.checkpoint.name, j.job_id))
    return jobs, notes


def _run_job(job: Job) -> dict[str, Any]:
    """Run one job (in a worker); return its result or its error, never raise.

    torch and the BLAS/OpenMP pools (numpy, scipy, scikit-learn) run on one thread while the
    job runs: the numbers then do not depend on the executor, and parallel jobs do not
    oversubscribe the cores (multi-threaded BLAS on small matrices is several times slower).
    """
    import torch
    from threadpoolctl import threadpool_limits

    from analysis.study import run_study

    threads = torch.get_num_threads()
    t0 = time.perf_counter()
    try:
        torch.set_num_threads(1)
        c = job.checkpoint
        with threadpool_limits(limits=1):
            result = run_study(c.spec, job.study, arch=c.arch, mean=c.mean, std=c.std, size=c.size,
                               progress=False, device="cpu")
        return {"status": "ok", "metrics": result.metrics, "details": result.details,
                "meta": result.meta, "seconds": time.perf_counter() - t0}
    except Exception as exc:  # noqa: BLE001 - a failing job is reported, the others go on
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(limit=8), "seconds": time.perf_counter() - t0}
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def _process_pool(n: int) -> Iterator[Any]:
    """A spawn-context ProcessPoolExecutor of ``n`` workers that die with this process.

    On any exit other than normal completion (an exception, Ctrl-C, SIGTERM turned into
    SystemExit by :func:`_exit_on_sigterm`) the workers are terminated at once instead of
    finishing their current jobs.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn"),
                               initializer=init_worker, initargs=(os.getpid(),))
    try:
        yield pool
    except BaseException:
        # The executor has no public way to stop running work; its worker table does.
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            proc.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


@contextlib.contextmanager
def _exit_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into ``SystemExit(143)`` while a report runs, so the workers are stopped and
    the lock released on the way out (Python's default is to die without cleaning up)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


_LOCK_NAME = ".bnprobe-report.lock"


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on the report folder ``out`` (``fcntl.flock`` on a lock file in it).

    A second run on the same folder would delete the first one's temporary files and compute
    every job twice; it stops instead, naming the process that holds the lock. The kernel
    releases the lock when the holder exits, however it exits.

    Raises
    ------
    ValueError
        When another process holds the lock.
    """
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise ValueError(f"The report folder {str(out)!r} is in use by another bnprobe report "
                             f"(PID {holder}); wait for it to finish or choose another --out.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
    finally:
        os.close(fd)


def _connect(scheduler: str) -> Any:
    """A ``dask.distributed.Client`` for ``scheduler``; ValueError when it cannot connect."""
    from dask.distributed import Client

    try:
        return Client(scheduler, timeout="20s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise ValueError(f"Cannot connect to the Dask scheduler at {scheduler!r}: {exc}") from None


def _failure(exc: BaseException) -> dict[str, Any]:
    return {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "seconds": 0.0}


def _execute(jobs: Sequence[Job], *, client: Any = None, workers: int | None = None
             ) -> Iterator[tuple[Job, dict[str, Any]]]:
    """Yield ``(job, outcome)`` as jobs finish: on a Dask ``client``, in local spawned processes,
    or in this process (one worker)."""
    if not jobs:
        return
    if client is not None:
        from dask.distributed import as_completed

        futures = {client.submit(_run_job, job, pure=False, key=f"bnprobe-{job.job_id}"): job
                   for job in jobs}
        try:
            for fut in as_completed(futures):
                try:
                    outcome = fut.result()
                except Exception as exc:  # noqa: BLE001 - worker lost, deserialisation ...
                    outcome = _failure(exc)
                yield futures[fut], outcome
        finally:
            client.cancel(list(futures))
        return
    n = min(len(jobs), workers or os.cpu_count() or 1)
    if n <= 1:
        for job in jobs:
            yield job, _run_job(job)
        return
    from concurrent.futures import as_completed as cf_completed

    with _process_pool(n) as pool:
        futures = {pool.submit(_run_job, job): job for job in jobs}
        for fut in cf_completed(futures):
            try:
                outcome = fut.result()
            except Exception as exc:  # noqa: BLE001 - a crashed worker (BrokenProcessPool)
                outcome = _failure(exc)
            yield futures[fut], outcome


def _job_done(stem: Path) -> bool:
    return stem.with_suffix(".parquet").is_file() and stem.with_suffix(".npz").is_file()


def _remove_stale_temporaries(out: Path) -> None:
    """Delete temporary files that a killed run left behind (names from atomic_path)."""
    for folder in (out, out / "jobs", out / "figures", out / "tables"):
        if folder.is_dir():
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
