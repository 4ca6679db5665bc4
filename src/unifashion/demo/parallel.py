"""Independent demo stages side by side, one CPU thread each.

The demo's tiny models are too small to keep two cores busy from one process: a second intra-op thread
speeds a step up by far less than 2x. Two stages that do not depend on each other (the tiny VAE's
pretraining and the retrieval stage; the captioning and the generation stages, which both start from the
retrieval checkpoint) therefore finish sooner side by side, one thread each, than one after the other with
two threads. Each runs in a fresh ("spawn") process: forking a process whose OpenMP pool is already
running can hang it.

When one stage ends, the other is told (a shared event) and takes the freed cores from its next timed step
(`Timer.run`). (Switching inside a Lightning fit, before each training batch, was tried in the demo: the
generation stage's training took 165.6 s with the switch and 155.5 s without, so it is not done.)

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
_TOTAL_THREADS = 0
"""In a child: the threads of the whole group (what the stage left may take)."""


def _init_child(event, total: int) -> None:
    global _SIBLING_DONE, _TOTAL_THREADS
    _SIBLING_DONE, _TOTAL_THREADS = event, total


def take_freed_cores() -> None:
    """In a side-by-side stage: all the group's threads once a sibling stage has ended (else nothing).
    Called before each timed step, from the thread that computes (the thread count is that thread's)."""
    import torch

    if _SIBLING_DONE is not None and _SIBLING_DONE.is_set() and torch.get_num_threads() < _TOTAL_THREADS:
        torch.set_num_threads(_TOTAL_THREADS)
        print(f"(a side-by-side stage ended: {_TOTAL_THREADS} threads from here on)", flush=True)


def _run_job(job: Job, log: str, threads: int) -> tuple[Any, dict[str, float], float]:
    """In the child: `threads` intra-op threads (the group's once a sibling ends), stdout/stderr to `log`."""
    import torch

    from unifashion.demo.timer import Timer

    torch.set_num_threads(threads)
    with open(log, "w", buffering=1, encoding="utf-8") as f:
        os.dup2(f.fileno(), 1)  # the file descriptors too: C extensions and tqdm write there
        os.dup2(f.fileno(), 2)
        sys.stdout = sys.stderr = f
        timer = Timer(before_each=take_freed_cores)
        kwargs = dict(job.kwargs)
        if "timer" in inspect.signature(job.fn).parameters:
            kwargs["timer"] = timer
        start = time.perf_counter()
        value = job.fn(*job.args, **kwargs)
        wall = time.perf_counter() - start
        f.flush()
    return value, timer.times, wall


def current_step(log: Path) -> str:
    """The step a stage is in: the last ``=== <step> ===`` line of its log ("running" for a log without one,
    "starting" for an empty or missing log)."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return "starting"
    for line in reversed(lines):
        if line.startswith("=== ") and line.endswith(" ==="):
            return line[4:-4]
    return "running" if lines else "starting"


def run_side_by_side(jobs: Mapping[str, Job], log_dir: str | Path, threads: int = 1,
                     echo: bool = True, heartbeat_s: float = 30.0) -> dict[str, JobResult]:
    """Runs `jobs` at once, each in its own process with `threads` intra-op threads.

    Args:
        jobs: stage name -> job.
        log_dir: where ``<name>.log`` goes (created).
        threads: intra-op threads per stage.
        echo: print each log when all are done (in the order of `jobs`).
        heartbeat_s: while they run, print every this many seconds the step each stage is in (0: never).

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
    results: dict[str, JobResult] = {}
    failed: list[tuple[str, BaseException]] = []
    with ProcessPoolExecutor(max_workers=len(jobs), mp_context=context, initializer=_init_child,
                             initargs=(sibling_done, threads * len(jobs))) as pool:
        futures = {name: pool.submit(_run_job, job, str(logs[name]), threads) for name, job in jobs.items()}
        start = time.perf_counter()
        pending = set(futures.values())
        while pending:  # a progress line every `heartbeat_s` until all are done
            done, pending = wait(pending, timeout=heartbeat_s, return_when=FIRST_COMPLETED)
            if done:
                sibling_done.set()  # the stages left take the freed cores
            if pending and heartbeat_s:
                print(f"  [{time.perf_counter() - start:5.0f} s] "
                      + "; ".join(f"{name}: {'done' if f.done() else current_step(logs[name])}"
                                  for name, f in futures.items()), flush=True)
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
