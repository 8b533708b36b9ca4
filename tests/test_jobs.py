"""The job registry behind the app's live runs (app/jobs.py): plain threads, a stop event, a queue per
device, one job per browser session, reaping of ended sessions; and the step adapter (app/live.py)
driving a real synthesis on a tiny model."""
from __future__ import annotations

import threading
import time

import pytest
import torch

from app import jobs
from app.jobs import Busy, Registry
from conftest import make_model

WAIT = 60.0


def _wait(cond, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def _blocker(release: threading.Event, steps: int = 10_000):
    """Work that reports steps until released or stopped; returns how many steps it made."""
    def work(job):
        for i in range(steps):
            if job.report(step=i + 1, steps=steps, text=f"step {i + 1}") or release.is_set():
                return i + 1
            time.sleep(0.005)
        return steps
    return work


def test_a_job_runs_in_a_thread_and_keeps_its_result() -> None:
    reg = Registry()
    caller = threading.get_ident()
    job = reg.submit("s1", "demo", "adds", lambda j: (threading.get_ident(), 2 + 3))
    _wait(lambda: not job.active)
    assert job.status == jobs.DONE
    worker, value = job.result
    assert value == 5 and worker != caller  # never on the caller's (Streamlit's script) thread
    assert reg.jobs("s1", "demo") == [job] and reg.current("s1") is None


def test_stop_ends_the_work_at_its_next_step_and_keeps_the_partial_result() -> None:
    reg = Registry()
    job = reg.submit("s1", "demo", "long", _blocker(threading.Event()))
    _wait(lambda: job.latest.get("step", 0) >= 3)
    job.stop()
    _wait(lambda: not job.active)
    assert job.status == jobs.STOPPED
    assert 3 <= job.result < 10_000
    assert job.stop_latency is not None and job.stop_latency < 1.0


def test_one_job_per_session_at_a_time() -> None:
    reg = Registry()
    release = threading.Event()
    first = reg.submit("s1", "demo", "first", _blocker(release))
    with pytest.raises(Busy, match="still"):
        reg.submit("s1", "demo", "second", lambda j: None)
    other = reg.submit("s2", "demo", "another session", lambda j: "ok")  # other sessions may queue
    release.set()
    _wait(lambda: not first.active and not other.active)
    assert other.result == "ok"
    again = reg.submit("s1", "demo", "after the first ended", lambda j: "again")
    _wait(lambda: not again.active)
    assert again.result == "again"


def test_jobs_of_several_sessions_queue_per_device_in_order() -> None:
    reg = Registry(default_capacity=1)
    release = threading.Event()
    order: list[str] = []

    def record(name):
        def work(job):
            order.append(name)
            return name
        return work

    running = reg.submit("a", "demo", "a", _blocker(release))
    _wait(lambda: running.status == jobs.RUNNING)
    b = reg.submit("b", "demo", "b", record("b"))
    c = reg.submit("c", "demo", "c", record("c"))
    gpu = reg.submit("d", "demo", "d", record("d"), device="cuda:0")  # another device has its own queue
    _wait(lambda: not gpu.active)
    assert (b.status, b.position, c.status, c.position) == (jobs.QUEUED, 1, jobs.QUEUED, 2)
    release.set()
    _wait(lambda: not b.active and not c.active)
    assert order == ["d", "b", "c"] and b.position == 0


def test_a_queued_job_that_is_stopped_never_runs() -> None:
    reg = Registry()
    release = threading.Event()
    ran = []
    running = reg.submit("a", "demo", "a", _blocker(release))
    _wait(lambda: running.status == jobs.RUNNING)
    queued = reg.submit("b", "demo", "b", lambda j: ran.append(1))
    queued.stop()
    _wait(lambda: not queued.active)
    release.set()
    _wait(lambda: not running.active)
    assert queued.status == jobs.CANCELLED and ran == []


def test_a_failing_job_reports_its_error_and_the_registry_keeps_working() -> None:
    reg = Registry()

    def boom(job):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    bad = reg.submit("s1", "demo", "fails", boom)
    _wait(lambda: not bad.active)
    assert bad.status == jobs.FAILED and "out of memory" in bad.error
    assert isinstance(bad.exception, torch.OutOfMemoryError)
    good = reg.submit("s1", "demo", "works", lambda j: 1)
    _wait(lambda: not good.active)
    assert good.status == jobs.DONE


def test_jobs_of_ended_sessions_are_stopped_and_forgotten() -> None:
    reg = Registry()
    gone = reg.submit("closed-tab", "demo", "orphan", _blocker(threading.Event()))
    alive = reg.submit("open-tab", "demo", "kept", _blocker(threading.Event()))
    _wait(lambda: gone.status == jobs.RUNNING)
    stopped = reg.reap(lambda owner: owner == "open-tab")
    assert stopped == [gone]
    _wait(lambda: not gone.active)
    assert gone.status == jobs.STOPPED and reg.jobs("closed-tab") == []
    assert alive.active and reg.jobs("open-tab") == [alive]
    alive.stop()
    _wait(lambda: not alive.active)


def test_the_history_is_bounded() -> None:
    reg = Registry()
    for i in range(jobs.KEEP_PER_SESSION + 5):
        j = reg.submit("s", "demo", f"#{i}", lambda job: None)
        _wait(lambda: not j.active)
    assert len(reg.jobs("s")) <= jobs.KEEP_PER_SESSION + 1


def test_step_reporter_drives_a_real_synthesis_and_stop_keeps_a_partial_result() -> None:
    """The library's callback contract through the app's adapter: progress, a preview, and Stop."""
    from app.live import StepReporter
    from dsvlib import default_config, synthesize

    model, _ = make_model()
    reg = Registry()
    steps = 5000
    job = reg.submit("s", "synthesize", "tiny", lambda j: synthesize(
        model, [0, 1, 2], default_config("digits", steps=steps), callback=StepReporter(j)))
    _wait(lambda: job.latest.get("step", 0) >= 5)
    latest = job.latest
    assert latest["steps"] == steps and "stationarity cos" in latest["text"]
    assert tuple(latest["preview"].shape) == (3, 1, 28, 28)  # the first step always carries a preview
    job.stop()
    _wait(lambda: not job.active)
    result = job.result
    assert job.status == jobs.STOPPED
    assert 5 <= result.steps_run < steps and tuple(result.images.shape) == (3, 1, 28, 28)
    assert torch.isfinite(result.images).all()
