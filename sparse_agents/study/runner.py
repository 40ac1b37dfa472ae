"""Run study jobs: local processes (default) or a Ray cluster; resumable and crash-safe.

Every finished job writes its record atomically (a grid point ``<out>/runs/<job_id>.json``,
an RL benchmark run its folder's ``summary.json``); a re-run skips the jobs whose record
says ``ok``. A job that raises is recorded as ``failed`` with its traceback; a job whose
process dies (killed, out of memory) is recorded as ``failed`` with its exit code. Neither
stops the other jobs. A grid point keeps what it needs between attempts in
``<out>/checkpoints/<job_id>`` (a stream run's per-task checkpoint, so a killed stream
resumes after its last finished task), removed once its record says ``ok``. The one
engine of every sweep: the study CLI and the RL benchmarks (``scripts/bench_rl*.py``)
expand their grids into jobs and call :func:`run_study`.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import platform
import time
import traceback
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sparse_agents.study.job import Job, StudyJob
from sparse_agents.study.store import write_json_atomic
from sparse_agents.study.workloads import resolve, seed_everything

BACKENDS = ("process", "ray")


def versions() -> dict:
    """Versions of the packages a result depends on (from metadata: nothing imported)."""
    out = {"python": platform.python_version()}
    for name in ("torch", "stable-baselines3", "avalanche-lib", "gymnasium", "sparse-agents"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def work(job: StudyJob, out: Path) -> dict:
    """``job``'s metrics: its workload's function for a grid point, its own ``run_in(out)``
    for a job that trains into files (an RL benchmark run)."""
    if isinstance(job, Job):
        return resolve(job.workload)(job, job.scratch(Path(out)))
    return job.run_in(Path(out))


def execute(job: StudyJob, out: str | Path = ".") -> dict:
    """Run ``job`` in this process and return its record (never raises)."""
    start = time.perf_counter()
    record = {"job_id": job.job_id, "config": job.config(), "status": "ok", "error": None}
    try:
        seed_everything(job.seed)
        metrics = work(job, Path(out))
        record["masks"] = metrics.pop("masks", {})
        record["metrics"] = metrics
    except Exception:  # noqa: BLE001 - recorded, so the other jobs go on
        record.update(status="failed", error=traceback.format_exc(), metrics={}, masks={})
    record["wall_time"] = time.perf_counter() - start
    record["versions"] = versions()
    record["host"] = platform.node()
    record["finished_at"] = time.time()
    return record


def store(job: StudyJob, out: Path, record: dict) -> None:
    """Write ``job``'s record; once it is ``ok``, the job's scratch folder goes."""
    job.write_record(out, record)
    if record["status"] == "ok" and isinstance(job, Job):
        job.clear_scratch(out)


def _child(job: StudyJob, out: str) -> None:
    store(job, Path(out), execute(job, out))


def _failed(job: StudyJob, error: str) -> dict:
    return {"job_id": job.job_id, "config": job.config(), "status": "failed", "error": error,
            "metrics": {}, "masks": {}, "wall_time": None, "versions": versions(),
            "finished_at": time.time()}


def _run_processes(jobs: Sequence[StudyJob], out: Path, workers: int, progress: Progress,
                   task) -> None:
    """One spawned process per job, ``workers`` at a time: a crash loses only its job."""
    ctx = mp.get_context("spawn")
    queue = list(jobs)
    running: dict = {}
    while queue or running:
        while queue and len(running) < workers:
            job = queue.pop(0)
            job.clear_record(out)  # a stale failure must not pass for this run's
            proc = ctx.Process(target=_child, args=(job, str(out)), daemon=False)
            proc.start()
            running[proc] = job
        time.sleep(0.05)
        for proc in [p for p in running if not p.is_alive()]:
            job = running.pop(proc)
            proc.join()
            if job.read_record(out) is None:
                job.write_record(out, _failed(
                    job, f"worker process died (exit code {proc.exitcode})"))
            progress.advance(task)


def _run_ray(jobs: Sequence[StudyJob], out: Path, workers: int, address: str | None,
             progress: Progress, task) -> None:
    """Run on a Ray cluster (``address`` or ``RAY_ADDRESS``; none: a local cluster)."""
    try:
        import ray
    except ImportError as err:
        raise ValueError("backend='ray' needs the optional extra: pip install "
                         "'sparse-agents[ray]'") from err
    address = address or os.environ.get("RAY_ADDRESS")
    if not ray.is_initialized():
        kwargs = {"include_dashboard": False, "log_to_driver": False}
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=workers, **kwargs)
    remote = ray.remote(num_cpus=1, max_retries=0)(execute)
    refs = {remote.remote(job, str(out)): job for job in jobs}
    while refs:
        done, _ = ray.wait(list(refs), num_returns=1)
        for ref in done:
            job = refs.pop(ref)
            try:
                record = ray.get(ref)
            except Exception as err:  # noqa: BLE001 - a dead worker fails only its job
                record = _failed(job, f"ray task failed: {err!r}")
            # The driver writes the record, so grid points need no shared file system
            # (an RL benchmark run's model and curves stay where its worker ran).
            store(job, out, record)
            progress.advance(task)


def is_done(job: StudyJob, out: str | Path, retry_failed: bool = True) -> bool:
    """Whether ``job`` needs no (re-)run: its record says ``ok`` (or it failed and
    ``retry_failed`` is off)."""
    record = job.read_record(Path(out))
    if record is None:
        return False
    return record.get("status") == "ok" or not retry_failed


def pending(jobs: Sequence[StudyJob], out: str | Path,
            retry_failed: bool = True) -> list[StudyJob]:
    """The jobs a (resumed) study under ``out`` would run; reads only."""
    return [j for j in jobs if not is_done(j, out, retry_failed)]


def run_study(jobs: Sequence[StudyJob], out: str | Path, workers: int | None = None,
              backend: str = "process", ray_address: str | None = None,
              retry_failed: bool = True, show_progress: bool = True) -> list[dict]:
    """Run the jobs not finished yet under ``out``; return every job's record."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    workers = int(workers or os.cpu_count() or 1)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "study.json", {"jobs": [j.config() | {"job_id": j.job_id}
                                                    for j in jobs]})
    todo = pending(jobs, out, retry_failed)
    columns = (TextColumn("[bold]study"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not show_progress) as progress:
        task = progress.add_task("jobs", total=len(todo))
        if todo and backend == "process":
            _run_processes(todo, out, workers, progress, task)
        elif todo:
            _run_ray(todo, out, workers, ray_address, progress, task)
    return [j.read_record(out) for j in jobs]
