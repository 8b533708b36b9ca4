"""Streamlit side of the job registry (:mod:`app.jobs`): who the browser session is, a reaper that
stops the jobs of sessions that have ended, the step-callback adapter that feeds a job's progress,
and the polling fragment that shows it with a Stop button.

The script thread only submits and reads: it never waits on the work.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any, Callable

import streamlit as st
import torch

from app import jobs as jobs_mod
from app.jobs import Job
from dsvlib.progress import describe

POLL_SECONDS = 0.4  # how often the progress fragment re-reads the job
PREVIEW_SECONDS = 0.5  # the work renders a preview at most this often (rendering costs a little)
# A session must be gone this long before its jobs are stopped (a reconnect keeps them).
REAP_GRACE_SECONDS = float(os.environ.get("DSV_SESSION_GRACE_S", "15") or 15)
REAP_SECONDS = min(5.0, max(REAP_GRACE_SECONDS / 2, 0.5))


def session_id() -> str:
    """The browser session running this script ("local" outside a Streamlit server run)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else "local"


def _session_alive(owner: str) -> bool:
    from streamlit import runtime

    if not runtime.exists():  # AppTest and plain Python: no server, nothing ends
        return True
    return runtime.get_instance().is_active_session(owner)


_reaper_started = threading.Event()


def _reaper() -> None:
    """Background thread: stop the jobs of browser sessions that have ended (closed tab)."""
    gone_since: dict[str, float] = {}
    while True:
        time.sleep(REAP_SECONDS)
        try:
            now = time.monotonic()
            reg = jobs_mod.registry()
            for owner in reg.owners():
                if _session_alive(owner):
                    gone_since.pop(owner, None)
                else:
                    gone_since.setdefault(owner, now)
            expired = {o for o, t in gone_since.items() if now - t >= REAP_GRACE_SECONDS}
            if expired:
                for job in reg.reap(lambda o: o not in expired):
                    print(f"dsv-studio: browser session ended: stopped job #{job.id} ({job.kind}: {job.title})",
                          file=sys.stderr, flush=True)
                for o in expired:
                    gone_since.pop(o, None)
        except Exception:  # noqa: BLE001 - the reaper must never die
            jobs_mod.log.exception("job reaper")


def registry() -> jobs_mod.Registry:
    """The process's job registry, with its reaper running."""
    if not _reaper_started.is_set():
        _reaper_started.set()
        threading.Thread(target=_reaper, name="dsv-job-reaper", daemon=True).start()
    return jobs_mod.registry()


def submit(kind: str, title: str, work: Callable[[Job], Any], *, device: str, params: dict | None = None) -> None:
    """Queue work for this browser session and rerun the page, which then shows the job's progress
    (and its buttons disabled); shows why not when the session already has a job."""
    try:
        registry().submit(session_id(), kind, title, work, device=device, params=params)
    except jobs_mod.Busy as e:
        st.warning(f"Not started: {e}.", icon=":material/hourglass_top:")
        return
    st.rerun()


def current_job() -> Job | None:
    return registry().current(session_id())


def last_finished(kind: str) -> Job | None:
    """This session's latest job of ``kind`` that is no longer queued or running."""
    done = [j for j in history(kind) if not j.active]
    return done[-1] if done else None


def history(kind: str) -> list[Job]:
    return registry().jobs(session_id(), kind)


# --------------------------------------------------------------------------- the work side


class StepReporter:
    """The library's step callback (``callback(info) -> stop?``) feeding a job: every step sets the
    progress, and at most every ``PREVIEW_SECONDS`` (and on the first step) the candidates are
    rendered for the live preview.  Returns the job's stop flag, so a run stops at its next step."""

    def __init__(self, job: Job, *, preview: bool = True) -> None:
        self.job = job
        self.preview = preview
        self._last_preview = -1e9

    def __call__(self, info: Any) -> bool:
        p = describe(info)  # the library's one wording of a step, shared with the CLI
        fields: dict[str, Any] = {"step": p.step, "steps": p.steps, "elapsed": p.elapsed or 0.0, "text": p.text}
        if p.cosine is not None:
            fields["cosine"] = p.cosine
        now = time.monotonic()
        images = getattr(info, "images", None)
        if self.preview and callable(images) and (now - self._last_preview >= PREVIEW_SECONDS or p.step >= p.steps):
            self._last_preview = now
            fields["preview"] = images()
            fields["preview_step"] = p.step
        return self.job.report(**fields)


# --------------------------------------------------------------------------- the page side


def progress_panel(job: Job, *, ncol: int = 10, tile: Callable[[torch.Tensor, int], Any] | None = None) -> None:
    """Progress of ``job`` (queue place, bar, live preview, Stop), re-read every ``POLL_SECONDS`` by
    a fragment; when the job ends the whole page reruns once to show its result."""
    seen_key = f"_job_seen_{job.id}"

    @st.fragment(run_every=POLL_SECONDS if job.active else None)
    def _panel() -> None:
        if not job.active:
            if not st.session_state.get(seen_key):
                st.session_state[seen_key] = True
                st.rerun()
            return
        latest = job.latest
        head, stop_col = st.columns([5, 1])
        if job.status == jobs_mod.QUEUED:
            ahead = job.position - 1
            head.info(f"Queued: {ahead} job{'s' if ahead != 1 else ''} of other users ahead of yours on "
                      f"{job.device}. It starts by itself; you can switch pages meanwhile.",
                      icon=":material/hourglass_top:")
        else:
            step, steps = latest.get("step", 0), max(latest.get("steps", 1), 1)
            text = latest.get("text", "starting ...")
            head.progress(min(step / steps, 1.0), text=f"{job.title}: {text} · {job.seconds:.1f} s")
        if stop_col.button("Stop", key=f"stop_{job.id}", help="End the run at its next step and keep what it has so far."):
            job.stop()
            st.caption("Stopping ...")
        preview = latest.get("preview")
        if preview is not None and tile is not None:
            st.image(tile(preview, ncol), caption=f"live preview, step {latest.get('preview_step', '?')}")

    _panel()


def job_area(kind: str, button: str, start: Callable[[], None], *, key: str, disabled: bool = False,
             help: str | None = None, primary: bool = True, **panel: Any) -> Job | None:
    """A page's run controls for jobs of ``kind``: its start button (``start`` submits the job),
    a note when this session's job of another kind is still going, the progress of its own, and
    the latest finished job of ``kind`` (returned for the page to show)."""
    mine = current_job()
    if st.button(button, type="primary" if primary else "secondary", key=key, disabled=disabled or mine is not None,
                 help=help):
        start()  # submits, then reruns the page
    if mine is not None and mine.kind != kind:
        st.info(f"Your {mine.kind} run ({mine.title}) is still going; {button} is available when it ends "
                "or after you stop it on its page.", icon=":material/hourglass_top:")
    if mine is not None and mine.kind == kind:
        progress_panel(mine, **panel)
    return last_finished(kind)


def status_line(job: Job) -> str:
    """How a finished job ended, in words."""
    if job.status == jobs_mod.DONE:
        return f"finished in {job.seconds:.1f} s"
    if job.status == jobs_mod.STOPPED:
        lat = job.stop_latency
        return f"stopped by you after {job.seconds:.1f} s" + (f" (ended {lat:.2f} s after Stop)" if lat is not None else "") + \
            ": the partial result is shown"
    if job.status == jobs_mod.CANCELLED:
        return "cancelled while queued"
    if job.status == jobs_mod.FAILED:
        return f"failed: {job.error}"
    return job.status
