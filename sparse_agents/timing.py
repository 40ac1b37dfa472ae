"""The one interleaved timer of the library and its benchmarks.

Candidates are timed in turn, round after round (A, B, A, B, ...), so that a change of
machine load hits all of them alike; each sample is the mean seconds per call over a
batch of calls, and the result per candidate is the median over rounds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

__all__ = ["sample_interleaved", "synchronize", "time_interleaved"]

#: most calls in one sample when the count is calibrated from ``min_sample_s``
MAX_CALLS = 20_000


def _cuda(device: torch.device | str | None) -> torch.device | None:
    """``device`` when it is a CUDA device, else ``None``."""
    if device is None:
        return None
    device = torch.device(device)
    return device if device.type == "cuda" else None


def synchronize(device: torch.device | str | None) -> None:
    """Wait for a CUDA ``device``'s queued work (no-op for CPU or ``None``)."""
    cuda = _cuda(device)
    if cuda is not None:
        torch.cuda.synchronize(cuda)


def _calibrate(fn: Callable[[], Any], min_sample_s: float, max_calls: int,
               device: torch.device | str | None) -> int:
    """Calls of ``fn`` that take about ``min_sample_s`` (from one timed call)."""
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    one = max(time.perf_counter() - t0, 1e-7)
    return max(1, min(max_calls, int(min_sample_s / one)))


def _calls(fns: Mapping[str, Callable[[], Any]], calls: int | Mapping[str, int],
           min_sample_s: float | None, max_calls: int,
           device: torch.device | str | None) -> dict[str, int]:
    if min_sample_s is not None:
        return {n: _calibrate(f, min_sample_s, max_calls, device) for n, f in fns.items()}
    if isinstance(calls, Mapping):
        return {n: max(1, int(calls[n])) for n in fns}
    return dict.fromkeys(fns, max(1, int(calls)))


def _sample(fn: Callable[[], Any], n: int, cuda: torch.device | None) -> float:
    """Mean seconds per call over ``n`` calls of ``fn`` (CUDA work included)."""
    if cuda is not None:
        torch.cuda.synchronize(cuda)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    if cuda is not None:
        torch.cuda.synchronize(cuda)
    return (time.perf_counter() - t0) / n


def _same_threads(threads: int, during: str) -> None:
    now = torch.get_num_threads()
    if now != threads:
        raise RuntimeError(f"torch's thread count changed from {threads} to {now} during "
                           f"{during}: the timings would mix thread counts")


def sample_interleaved(fns: Mapping[str, Callable[[], Any]], *, rounds: int = 5,
                       calls: int | Mapping[str, int] = 1, min_sample_s: float | None = None,
                       max_calls: int = MAX_CALLS, warmup: int = 1,
                       device: torch.device | str | None = None, rotate: bool = False,
                       drop_slower: float | None = None,
                       before: Mapping[str, Callable[[], Any]] | None = None,
                       ) -> dict[str, list[float]]:
    """Seconds per call of every candidate, one sample per round, candidates in turn.

    Args:
        fns: name -> a callable without arguments (``functools.partial`` binds inputs).
        rounds: samples per candidate.
        calls: calls per sample (one count, or one per name).
        min_sample_s: instead of ``calls``, calibrate each candidate's count so that a
            sample lasts at least this long (at most ``max_calls`` calls).
        warmup: untimed calls of each candidate first.
        device: synchronise this CUDA device around every sample (``None``: CPU).
        rotate: start round ``r`` at the ``r``-th candidate (A, B, C; B, C, A; ...)
            instead of always at the first.
        drop_slower: after the first round, stop timing candidates slower than this
            factor times the fastest (they keep their one sample).
        before: name -> an untimed callable run before each of that candidate's samples
            (e.g. attaching or detaching hooks).

    Raises ``RuntimeError`` when torch's thread count changes while timing (something
    the candidates run reset it), as the samples would then mix thread counts.
    """
    threads = torch.get_num_threads()
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    _same_threads(threads, "warm-up")
    cuda = _cuda(device)
    synchronize(cuda)
    reps = _calls(fns, calls, min_sample_s, max_calls, cuda)
    before = before or {}
    samples: dict[str, list[float]] = {n: [] for n in fns}
    live = list(fns)
    for r in range(rounds):
        order = live[r % len(live):] + live[:r % len(live)] if rotate else live
        for name in order:
            fn, n = fns[name], reps[name]
            if name in before:
                before[name]()
            samples[name].append(_sample(fn, n, cuda))
            _same_threads(threads, repr(name))
        if r == 0 and drop_slower is not None and len(live) > 1:
            best = min(samples[n][0] for n in live)
            live = [n for n in live if samples[n][0] <= drop_slower * best]
    return samples


def time_interleaved(fns: Mapping[str, Callable[[], Any]], **options: Any) -> dict[str, float]:
    """Median seconds per call of every candidate: :func:`sample_interleaved`'s samples
    (same keyword options), reduced to their median."""
    return {n: float(statistics.median(s))
            for n, s in sample_interleaved(fns, **options).items()}
