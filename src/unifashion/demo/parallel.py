"""Independent demo stages side by side, one CPU thread each.

The demo's tiny models are too small to keep two cores busy from one process: a second intra-op thread
speeds a step up by far less than 2x. Two stages that do not depend on each other (the tiny VAE's
pretraining and the retrieval stage; the captioning and the generation stages, which both start from the
retrieval checkpoint) therefore finish sooner side by side, one thread each, than one after the other with
two threads. Each runs in a fresh ("spawn") process: forking a process whose OpenMP pool is already
running can hang it.

When one stage ends, the other is told (a shared event) and takes the freed cores from its next timed step
on (`Timer.run`; a thread count cannot be changed inside a running step).

A stage is a `Job`: a module-level callable (it crosses the process boundary by reference) and its
arguments. When it takes a ``timer`` keyword (the demo's stage functions do) it gets a fresh `Timer`
whose times come back with its result. Its standard output and error go to ``<log dir>/<name>.log``,
which `run_side_by_side` prints after the stages end, one after the other, so the output reads as in a
sequential run; a stage that fails raises `StageError` naming the stage and its log.
"""

from __future__ import annotations

import inspect
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class StageError(RuntimeError):
    """A stage run side by side failed; the message names the stage and its log file."""


@dataclass
class Job:
    """One stage: ``fn(*args, **kwargs)`` (plus ``timer=`` when `fn` takes it)."""

    fn: Callable[..., Any]
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


@dataclass
class JobResult:
    """What a stage returned, the `Timer` times it recorded and its wall time (s)."""

    value: Any
    times: dict[str, float]
    wall_s: float
    log: Path


_SIBLING_DONE = None
"""In a child: the event the parent sets when another stage of the group has ended."""


def _init_child(event) -> None:
    global _SIBLING_DONE
    _SIBLING_DONE = event


def _take_freed_cores(total: int) -> None:
    """Before each timed step of a child: all `total` threads once a sibling stage has ended."""
    import torch

    if _SIBLING_DONE is not None and _SIBLING_DONE.is_set() and torch.get_num_threads() < total:
        torch.set_num_threads(total)
        print(f"(a side-by-side stage ended: {total} threads from here on)", flush=True)


def _run_job(job: Job, log: str, threads: int, total: int) -> tuple[Any, dict[str, float], float]:
    """In the child: `threads` intra-op threads (`total` once a sibling ends), stdout/stderr to `log`."""
    import functools

    import torch

    from unifashion.demo.timer import Timer

    torch.set_num_threads(threads)
    with open(log, "w", buffering=1, encoding="utf-8") as f:
        os.dup2(f.fileno(), 1)  # the file descriptors too: C extensions and tqdm write there
        os.dup2(f.fileno(), 2)
        sys.stdout = sys.stderr = f
        timer = Timer(before_each=functools.partial(_take_freed_cores, total))
        kwargs = dict(job.kwargs)
        if "timer" in inspect.signature(job.fn).parameters:
            kwargs["timer"] = timer
        start = time.perf_counter()
        value = job.fn(*job.args, **kwargs)
        wall = time.perf_counter() - start
        f.flush()
    return value, timer.times, wall


def run_side_by_side(jobs: Mapping[str, Job], log_dir: str | Path, threads: int = 1,
                     echo: bool = True) -> dict[str, JobResult]:
    """Runs `jobs` at once, each in its own process with `threads` intra-op threads.

    Args:
        jobs: stage name -> job.
        log_dir: where ``<name>.log`` goes (created).
        threads: intra-op threads per stage.
        echo: print each log when all are done (in the order of `jobs`).

    Returns:
        stage name -> `JobResult`.

    Raises:
        StageError: a stage raised; its exception is chained, its log is named (and echoed).
    """
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    logs = {name: log_dir / f"{name}.log" for name in jobs}
    print(f"\n=== side by side ({threads} thread{'s' * (threads > 1)} each): {', '.join(jobs)}; logs: "
          + ", ".join(str(p) for p in logs.values()), flush=True)
    context = multiprocessing.get_context("spawn")
    sibling_done = context.Event()
    total = threads * len(jobs)
    results: dict[str, JobResult] = {}
    failed: list[tuple[str, BaseException]] = []
    with ProcessPoolExecutor(max_workers=len(jobs), mp_context=context, initializer=_init_child,
                             initargs=(sibling_done,)) as pool:
        futures = {name: pool.submit(_run_job, job, str(logs[name]), threads, total) for name, job in jobs.items()}
        wait(futures.values(), return_when=FIRST_COMPLETED)
        sibling_done.set()
        for name, future in futures.items():
            try:
                value, times, wall = future.result()
                results[name] = JobResult(value, times, wall, logs[name])
            except BaseException as err:  # noqa: BLE001 - reported below, with the stage's log
                failed.append((name, err))
    if echo:
        for name in jobs:
            if logs[name].is_file():
                print(f"\n--- {name} (log {logs[name]}) ---", flush=True)
                print(logs[name].read_text(encoding="utf-8", errors="replace"), flush=True)
    if failed:
        name, err = failed[0]
        raise StageError(f"demo stage {name!r} failed ({type(err).__name__}: {err}); its log: {logs[name]}") from err
    for name, result in results.items():
        print(f"=== {name}: {result.wall_s:.1f} s (side by side)", flush=True)
    return results
