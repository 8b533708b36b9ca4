"""Long work off Streamlit's script thread: a job registry, one worker thread per job, a stop event
and a FIFO queue per device.

Why: a Streamlit script run is cancelled and restarted on every click, so a synthesis that runs
inside the script dies with it.  Here the page only *submits* a job and *reads* its latest step;
the work itself runs in a thread that no rerun touches.  The registry lives for the server
process (one per process, :func:`registry`), keyed by browser session, so a result is still
there when the user comes back from another page.

Rules:
* one job per browser session at a time (:class:`Busy` otherwise);
* jobs of all sessions share each device through a FIFO queue: at most ``capacity`` run at once
  per device (default 1 on a CPU: two synthesis runs on 2 cores would both take twice as long),
  the others wait and can read their place (:attr:`Job.position`);
* :meth:`Job.stop` sets an event that the work polls through :meth:`Job.report` (the library's
  step callback returns it, so a run stops at its next step and keeps its partial result);
* a job whose browser session has ended is stopped by :meth:`Registry.reap` (the app passes a
  liveness check), and the session's finished jobs are forgotten.

Nothing here imports Streamlit: the module is plain threading and is tested as such.
"""
from __future__ import annotations

import itertools
import logging
import os
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger("dsv_studio.jobs")

QUEUED, RUNNING, DONE, STOPPED, FAILED, CANCELLED = "queued", "running", "done", "stopped", "failed", "cancelled"
ACTIVE = (QUEUED, RUNNING)
FINISHED = (DONE, STOPPED, FAILED, CANCELLED)
KEEP_PER_SESSION = 12  # finished jobs kept per browser session (the run history); older ones are dropped


class Busy(RuntimeError):
    """This browser session already has a job queued or running."""


class JobStopped(Exception):
    """Raised by work that checks :meth:`Job.check_stop` between phases; ends the job as stopped."""


@dataclass
class Job:
    """One unit of long work and everything a page needs to show about it."""

    id: int
    owner: str  # the browser session
    kind: str  # "synthesize", "rank", "edit", "distill", ...
    title: str  # one line for the user: "10 classes x 2 on mnist_convnet"
    device: str
    params: dict[str, Any] = field(default_factory=dict)  # what the page needs to show the result again
    status: str = QUEUED
    result: Any = None
    error: str | None = None  # one line: the exception's type and first line
    exception: BaseException | None = None  # for the page's error formatter
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    stop_requested_at: float | None = None
    first_report_at: float | None = None
    _latest: dict[str, Any] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _registry: "Registry | None" = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- read by the page ------------------------------------------------------------------
    @property
    def latest(self) -> dict[str, Any]:
        """A copy of the latest progress report (step, steps, text, preview, ...)."""
        with self._lock:
            return dict(self._latest)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def position(self) -> int:
        """0 while running or finished; k >= 1 when k-1 jobs are ahead of it in its device's queue."""
        if self.status != QUEUED or self._registry is None:
            return 0
        return self._registry.queue_position(self)

    @property
    def seconds(self) -> float:
        """Run time so far (or in total), excluding the time spent queued."""
        if self.started is None:
            return 0.0
        return (self.finished or time.time()) - self.started

    @property
    def stop_latency(self) -> float | None:
        """Seconds from the Stop request to the end of the work."""
        if self.stop_requested_at is None or self.finished is None:
            return None
        return self.finished - self.stop_requested_at

    # -- called by the page -----------------------------------------------------------------
    def stop(self) -> None:
        """Ask the work to stop at its next step; a queued job is cancelled at once."""
        if self.stop_requested_at is None:
            self.stop_requested_at = time.time()
        self._stop.set()
        if self._registry is not None:
            self._registry._wake()

    # -- called by the work -----------------------------------------------------------------
    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def report(self, **fields: Any) -> bool:
        """Store the latest progress; returns True when the work should stop (the library's
        callback contract: ``callback(info) -> stop?``)."""
        now = time.time()
        with self._lock:
            if self.first_report_at is None:
                self.first_report_at = now
            self._latest.update(fields, at=now)
        return self._stop.is_set()

    def check_stop(self) -> None:
        """Between phases of multi-phase work: raise :class:`JobStopped` when a stop was asked."""
        if self._stop.is_set():
            raise JobStopped()


Work = Callable[[Job], Any]


class Registry:
    """All jobs of the server process; thread-safe."""

    def __init__(self, capacity: dict[str, int] | None = None, default_capacity: int = 1) -> None:
        self._cond = threading.Condition()
        self._jobs: dict[str, list[Job]] = {}  # owner -> jobs, oldest first
        self._waiting: dict[str, list[Job]] = {}  # device -> FIFO of queued jobs
        self._running: dict[str, int] = {}
        self._capacity = dict(capacity or {})
        self._default_capacity = max(1, int(default_capacity))
        self._ids = itertools.count(1)

    # -- submitting and reading --------------------------------------------------------------
    def submit(self, owner: str, kind: str, title: str, work: Work, *, device: str = "cpu",
               params: dict[str, Any] | None = None) -> Job:
        """Queue ``work(job)`` for ``owner``; its return value becomes ``job.result``."""
        with self._cond:
            busy = self.current(owner)
            if busy is not None:
                raise Busy(f"a {busy.kind} job is still {busy.status} ({busy.title}); stop it or wait for it")
            job = Job(id=next(self._ids), owner=owner, kind=kind, title=title, device=str(device),
                      params=dict(params or {}), _registry=self)
            self._jobs.setdefault(owner, []).append(job)
            self._waiting.setdefault(job.device, []).append(job)
            self._trim(owner)
        threading.Thread(target=self._run, args=(job, work), name=f"dsv-job-{job.id}", daemon=True).start()
        return job

    def current(self, owner: str) -> Job | None:
        """The owner's queued or running job, if any."""
        with self._cond:
            return next((job for job in reversed(self._jobs.get(owner, [])) if job.active), None)

    def jobs(self, owner: str, kind: str | None = None) -> list[Job]:
        """The owner's jobs (of ``kind``), oldest first."""
        with self._cond:
            return [j for j in self._jobs.get(owner, []) if kind is None or j.kind == kind]

    def queue_position(self, job: Job) -> int:
        with self._cond:
            q = self._waiting.get(job.device, [])
            return q.index(job) + 1 if job in q else 0

    def owners(self) -> list[str]:
        with self._cond:
            return list(self._jobs)

    # -- session ends ---------------------------------------------------------------------------
    def reap(self, is_alive: Callable[[str], bool]) -> list[Job]:
        """Stop the jobs of browser sessions that have ended and forget those sessions; returns
        the jobs that were stopped."""
        stopped = []
        for owner in self.owners():
            if is_alive(owner):
                continue
            with self._cond:
                jobs = self._jobs.pop(owner, [])
            for job in jobs:
                if job.active:
                    job.stop()
                    stopped.append(job)
        return stopped

    def forget(self, owner: str) -> None:
        """Stop and drop everything of one session (its end, or a test's clean-up)."""
        self.reap(lambda o: o != owner)

    # -- internals --------------------------------------------------------------------------------
    def _capacity_of(self, device: str) -> int:
        return self._capacity.get(device, self._default_capacity)

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _trim(self, owner: str) -> None:
        jobs = self._jobs[owner]
        finished = [j for j in jobs if not j.active]
        for old in finished[:-KEEP_PER_SESSION] if len(finished) > KEEP_PER_SESSION else []:
            jobs.remove(old)

    def _wait_for_slot(self, job: Job) -> bool:
        """Block until ``job`` heads its device's queue and a slot is free (True), or until it is
        stopped while waiting (False)."""
        with self._cond:
            q = self._waiting[job.device]
            while not job.stop_requested and not (q and q[0] is job and
                                                  self._running.get(job.device, 0) < self._capacity_of(job.device)):
                self._cond.wait(timeout=0.5)
            q.remove(job)
            if job.stop_requested:
                self._cond.notify_all()
                return False
            self._running[job.device] = self._running.get(job.device, 0) + 1
            job.status, job.started = RUNNING, time.time()
            self._cond.notify_all()
            return True

    def _run(self, job: Job, work: Work) -> None:
        if not self._wait_for_slot(job):
            job.status, job.finished = CANCELLED, time.time()
            return
        try:
            result = work(job)
            job.result = result
            job.status = STOPPED if job.stop_requested else DONE
        except JobStopped:
            job.status = STOPPED
        except BaseException as e:  # noqa: BLE001 - a failed job is shown on its page, never raised into the server
            log.error("job %s (%s) failed:\n%s", job.id, job.kind, traceback.format_exc())
            job.error, job.exception = _describe(e), e
            job.status = FAILED
        finally:
            job.finished = time.time()
            with self._cond:
                self._running[job.device] -= 1
                self._cond.notify_all()


def _describe(e: BaseException) -> str:
    """A one-line description for the page; the page's error formatter adds the advice."""
    text = str(e).strip().splitlines()[0][:500] if str(e).strip() else type(e).__name__
    return f"{type(e).__name__}: {text}"


_REGISTRY: Registry | None = None
_REGISTRY_LOCK = threading.Lock()


def registry() -> Registry:
    """The process-wide registry (created on first use).  ``DSV_JOBS_PER_DEVICE`` sets how many
    jobs run at once on each device (default 1)."""
    global _REGISTRY
    with _REGISTRY_LOCK:
        if _REGISTRY is None:
            _REGISTRY = Registry(default_capacity=int(os.environ.get("DSV_JOBS_PER_DEVICE", "1") or 1))
        return _REGISTRY
