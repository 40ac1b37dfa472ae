"""Per-run result files, written atomically: nothing finished is lost to a crash (whether a
job is done: :func:`sparse_agents.study.runner.is_done`)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def write_json_atomic(path: Path, obj: dict) -> None:
    """Write ``obj`` as JSON to ``path`` via a temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh, indent=2, sort_keys=True, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def result_path(out: Path, job_id: str) -> Path:
    """Where the result of ``job_id`` lives."""
    return Path(out) / "runs" / f"{job_id}.json"


def read_result(out: Path, job_id: str) -> dict | None:
    """The stored result of ``job_id``, or ``None`` if it has none (or an unreadable one)."""
    path = result_path(out, job_id)
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
