"""The page's side of a job (Streamlit): a button or an immediate start, queue position, progress and a Cancel button
in a fragment refreshed every second, the result once done, one line on failure."""

from __future__ import annotations

from typing import Any, Callable

from .limits import JobRefused
from .pool import CANCELLED, DONE, ERROR, QUEUED, RUNNING, runner
from .worker import _one_line


def job_panel(kind: str, payload: Any, key: str, session_id: str, label: str | None = None) -> Any:
    """Run ``kind`` as a job from a page (Streamlit): with ``label``, a button starts it, else it starts at once (a
    sweep the page needs); meanwhile its queue position, progress and a Cancel button show in a fragment refreshed
    every second. Returns the result once done (on every run after that, until ``key`` changes), else None. A
    failure, a limit or a cancel is one line (and the button is offered again)."""
    import streamlit as st

    ss = st.session_state
    running: dict = ss.setdefault("_jobs", {})  # key -> job id
    results: dict = ss.setdefault("_job_results", {})  # key -> result (the latest few)
    lines: dict = ss.setdefault("_job_lines", {})  # key -> the last job's one-line error
    if key in results:
        return results[key]
    job_id = running.get(key)
    if job_id is not None:
        s = runner().status(job_id)
        if s["state"] == DONE:
            del running[key]
            lines.pop(key, None)
            results[key] = s["result"]
            while len(results) > 8:  # a session keeps only its latest few results
                results.pop(next(iter(results)))
            return s["result"]
        if s["state"] in (ERROR, CANCELLED, "unknown"):
            del running[key]
            lines[key] = s.get("error") or s["state"]
        else:
            _attach(job_id, session_id)
            _job_fragment(job_id, session_id)
            return None
    start = st.button(label, type="primary", key=f"b_job_{kind}" if kind != "recipe" else "b_run") if label \
        else key not in lines  # started at once, unless it just failed (then: the line, and a retry button)
    if not label and key in lines:
        start = st.button("Try again", key=f"b_retry_{kind}")
    if start:
        try:
            running[key] = runner().submit(kind, payload, session_id)
            lines.pop(key, None)
        except JobRefused as e:
            lines[key] = str(e)
        else:
            _attach(running[key], session_id)
            _job_fragment(running[key], session_id)
            return None
    if key in lines:
        st.error(lines[key])
    return None


def training_panel(recipe: dict, key: str, session_id: str, adopt: Callable[[dict], None],
                   label: str = "Run training steps") -> bool:
    """The Explore page's training control: ``job_panel`` for a recipe with a button; when the job is done,
    ``adopt(result)`` takes the result (once, e.g. into the page's result cache). True once adopted."""
    import streamlit as st

    result = job_panel("recipe", {"recipe": recipe}, key, session_id, label)
    if result is None:
        return False
    st.session_state["_job_results"].pop(key, None)  # adopted: the page's own cache holds it from now on
    try:
        adopt(result)
    except Exception as e:  # the result cannot be rebuilt here: one line, the button comes back
        st.session_state["_job_lines"][key] = f"recipe job finished but its result could not be loaded ({_one_line(e)})"
        st.error(st.session_state["_job_lines"][key])
        return False
    return True


def _page_alive(page_session: str) -> bool:
    """Whether a Streamlit session (a browser tab's connection) is still connected to this server."""
    from streamlit.runtime import Runtime

    if not Runtime.exists():  # no server (AppTest, bare mode): nobody can leave
        return True
    return Runtime.instance().is_active_session(page_session)


def _attach(job_id: str, session_id: str) -> None:
    """Tie the job to this page session: when the student leaves (the tab's session ends), the job is cancelled
    for them (``JobRunner.attach``)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    runner().attach(job_id, session_id, getattr(ctx, "session_id", None), _page_alive)


def _job_fragment(job_id: str, session_id: str) -> None:
    import streamlit as st

    @st.fragment(run_every=1.0)
    def panel() -> None:
        s = runner().status(job_id)
        if s["state"] not in (QUEUED, RUNNING):
            st.rerun()  # the whole page takes the result (or shows the one-line error)
        if s["state"] == QUEUED:
            busy = runner().summary()
            text = (f"waiting for a worker: position {s['queue_position']} in the queue "
                    f"({busy['running']} running on {busy['workers']} worker process(es))")
        else:
            text = f"running ({s['elapsed_s']:.0f} s): {s['message']}"
        st.progress(float(s["progress"]), text=text)
        if st.button("Cancel", key=f"b_cancel_{job_id}"):  # two jobs on one page (an export, a timing): two keys
            runner().cancel(job_id, session_id)
            st.rerun()

    panel()
