"""Independent demo stages side by side (`demo.parallel.run_side_by_side`): each job runs in its own
process with one intra-op thread (both once its sibling has ended), its output goes to its log, its
result and timer times come back, and a failing stage is named with its log."""

from __future__ import annotations

import pytest
import torch

from unifashion.demo.parallel import Job, StageError, run_side_by_side


def timed_square(x: int, timer) -> dict:
    """A stage-shaped job: prints, times one step with the timer it is given, returns a value."""
    print(f"squaring {x}")
    y = timer.run("square", lambda: x * x)
    return {"y": y}


def plain_sum(a: int, b: int) -> int:
    print("summing")
    return a + b


def failing(message: str) -> None:
    print("about to fail")
    raise ValueError(message)


def test_jobs_run_in_their_own_single_threaded_processes(tmp_path, capsys):
    results = run_side_by_side({"square": Job(timed_square, (7,)), "sum": Job(plain_sum, (2,), {"b": 5})},
                               tmp_path / "logs")
    assert results["square"].value == {"y": 49}
    assert results["sum"].value == 7
    assert set(results["square"].times) == {"time/square_s"} and results["sum"].times == {}
    assert "squaring 7" in (tmp_path / "logs" / "square.log").read_text()
    assert "summing" in (tmp_path / "logs" / "sum.log").read_text()
    out = capsys.readouterr().out
    assert out.index("squaring 7") < out.index("summing")  # echoed in the order of the jobs, after both end


def test_a_failing_stage_is_named_with_its_log(tmp_path):
    with pytest.raises(StageError, match=r"'broken' failed \(ValueError: no such file x.h5\).*broken.log") as err:
        run_side_by_side({"fine": Job(plain_sum, (1, 2)), "broken": Job(failing, ("no such file x.h5",))},
                         tmp_path)
    assert isinstance(err.value.__cause__, ValueError)
    assert "about to fail" in (tmp_path / "broken.log").read_text()


def quick(started: str, timer) -> int:
    """Ends as soon as its sibling has started (so the two run in two processes)."""
    import time
    from pathlib import Path

    deadline = time.monotonic() + 60
    while not Path(started).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return timer.run("quick", lambda: torch.get_num_threads())


def slow_then_count(started: str, timer) -> list[int]:
    """Threads of a first step that lasts until its sibling has ended, and of the step after it."""
    import time
    from pathlib import Path

    from unifashion.demo import parallel

    Path(started).touch()
    def overlapping() -> int:
        parallel._SIBLING_DONE.wait(60)
        time.sleep(0.5)  # still in this step when the parent prints its line on the sibling's end
        return torch.get_num_threads()

    first = timer.run("overlapping", overlapping)
    return [first, timer.run("after", lambda: torch.get_num_threads())]


def test_the_stage_left_takes_the_freed_cores_at_its_next_step(tmp_path):
    started = str(tmp_path / "slow_started")
    results = run_side_by_side({"quick": Job(quick, (started,)), "slow": Job(slow_then_count, (started,))},
                               tmp_path, echo=False)
    assert results["quick"].value == 1
    assert results["slow"].value == [1, 2]
    assert "2 threads from here on" in (tmp_path / "slow.log").read_text()


def test_progress_lines_name_each_stage_s_current_step(tmp_path, capsys):
    started = str(tmp_path / "slow_started")
    run_side_by_side({"quick": Job(quick, (started,)), "slow": Job(slow_then_count, (started,))}, tmp_path,
                     echo=False, heartbeat_s=0.2)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  [")]
    assert lines and all("quick: " in line and "slow: " in line for line in lines)
    assert any("slow: overlapping" in line for line in lines)  # the step the slow stage was in
    from unifashion.demo.parallel import current_step

    assert current_step(tmp_path / "slow.log") == "after"
    assert current_step(tmp_path / "missing.log") == "starting"
    (tmp_path / "plain.log").write_text("no step yet\n")
    assert current_step(tmp_path / "plain.log") == "running"


def test_the_captioning_job_takes_the_work_off_the_critical_path(tmp_path):
    """With a captioning stage in the run, its job pretrains the tiny LLM and evaluates retrieval and the
    untrained generator (beside generation's training); without one, each stage does its own part."""
    from unifashion.demo.generation import generation_stage
    from unifashion.demo.pipeline import STAGES, _stage_job, captioning_job, retrieval_stage
    from unifashion.models.tiny_assets import pretrain_tiny_parts

    data, run = tmp_path / "data", tmp_path / "run"
    demo = {n: _stage_job(n, data, run, STAGES) for n in ("data_pretrained", "retrieval", "captioning", "generation")}
    assert demo["captioning"].fn is captioning_job
    assert demo["captioning"].kwargs == {"gallery_captions": True, "generation_baseline": True, "retrieval_eval": True}
    assert demo["retrieval"].fn is retrieval_stage and demo["retrieval"].kwargs == {"evaluate": False}
    assert demo["generation"].fn is generation_stage and demo["generation"].kwargs["baseline"] is False
    assert demo["data_pretrained"].fn is pretrain_tiny_parts
    assert demo["data_pretrained"].args == (data, 0, None)  # the VAE only: the captioning job pretrains the LLM

    alone = ("data", "retrieval", "generation")
    assert _stage_job("retrieval", data, run, alone).kwargs == {"evaluate": True}
    assert _stage_job("generation", data, run, alone).kwargs["baseline"] is True
    assert _stage_job("data_pretrained", data, run, alone).args[1] > 0  # the LLM too, with no captioning job
    no_composed = _stage_job("captioning", data, run, ("retrieval", "captioning"))
    assert no_composed.kwargs == {"gallery_captions": False, "generation_baseline": False, "retrieval_eval": True}
