"""The page's side of a job (Streamlit): a button or an immediate start, queue position, progress and a Cancel button
in a fragment refreshed every second (plain elements refreshed by the page's poller when the panel is drawn inside a
fragment already), the result once done, one line on failure."""

from __future__ import annotations

from typing import Any, Callable

from .limits import JobRefused
from .pool import CANCELLED, DONE, ERROR, QUEUED, RUNNING, runner
from .worker import _one_line


def job_panel(kind: str, payload: Any, key: str, session_id: str, label: str | None = None,
              start: bool | None = None) -> Any:
    """Run ``kind`` as a job from a page (Streamlit): with ``label``, a button starts it, else it starts at once (a
    sweep the page needs); with ``start`` (True or False), the page's own button, drawn elsewhere, decides (True: it was
    just pressed; no button is drawn here, and ``payload`` is only read when True). Meanwhile its queue position,
    progress and a Cancel button show in a fragment refreshed every second (drawn inside a fragment: plain
    elements, and the page polls with ``reset_watched``, ``jobs_watched`` and ``jobs_changed`` as Explore does; see
    the note above ``WATCHED``). Returns the result once done (on every run after that, until ``key`` changes or the
    page pops it from ``_job_results`` to run it again), else None. A failure, a limit or a cancel is one line (and
    the button is offered again)."""
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
            _show(job_id, session_id, s)
            return None
    if start is None:
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
            _show(running[key], session_id, runner().status(running[key]))
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


# A fragment must never be created inside another one: when a rerun request arrives while the outer fragment runs,
# Streamlit (1.67) drops the run's unsent messages of the fragments in the next run only, so a nested fragment could
# keep its elements while its parent's ones before it were dropped, and the browser, given an element past the end
# of a column it had ('Bad delta path index 6 (should be between [0, 5])'), showed a blank page (the note above
# ``poll_slot`` in pages/explore.py). So a panel drawn inside a fragment (Explore's workbench) is plain elements: it
# notes in session state (WATCHED) what it showed, and the page's own top-level poller, armed while ``jobs_watched``,
# reruns the page when ``jobs_changed``: a job shows something else (its state, queue position, or elapsed seconds,
# so about every second while it runs). Elsewhere the panel stays a fragment of its own, refreshed every second.
WATCHED = "_jobs_watched"  # job id -> the text its plain panel showed, of the panels drawn inside a fragment


def in_fragment() -> bool:
    """Whether the caller runs inside a fragment: the fragment id Streamlit's ``@st.fragment`` reads to find a new
    fragment's parent (on a Streamlit that keeps it elsewhere: the run context's ``current_fragment_id``)."""
    try:
        from streamlit.runtime.scriptrunner_utils.script_run_context import ThreadState  # lazy: internal, guarded

        return ThreadState.get().fragment_id is not None
    except Exception:  # moved, renamed or not initialised on this thread: the older attribute, else not in one
        from streamlit.runtime.scriptrunner import get_script_run_ctx  # lazy: the page's side only imports streamlit

        return getattr(get_script_run_ctx(suppress_warning=True), "current_fragment_id", None) is not None


def jobs_watched() -> bool:
    """Whether a plain panel (drawn inside a fragment) shows a queued or running job: the page's poller stays on."""
    import streamlit as st

    return bool(st.session_state.get(WATCHED))


def jobs_changed() -> bool:
    """For the page's top-level poller: whether what a plain panel showed of its job has changed since (a finished
    job's always has): then the page reruns, which draws the panel again or takes the job's result."""
    import streamlit as st

    watched: dict = st.session_state.get(WATCHED) or {}
    return any(_text(runner().status(job_id)) != shown for job_id, shown in list(watched.items()))


def reset_watched() -> None:
    """Forget the plain panels drawn so far: a page calls it before the fragment that draws them runs, so only the
    panels of its latest run are watched."""
    import streamlit as st

    st.session_state[WATCHED] = {}


def _text(s: dict) -> str:
    """The progress line of a job's status (queued: its position; running: elapsed seconds and message)."""
    if s["state"] == QUEUED:
        busy = runner().summary()
        return (f"waiting for a worker: position {s['queue_position']} in the queue "
                f"({busy['running']} running on {busy['workers']} worker process(es))")
    if s["state"] == RUNNING:
        return f"running ({s['elapsed_s']:.0f} s): {s['message']}"
    return s["state"]


def _draw(job_id: str, session_id: str, progress: float, text: str) -> None:
    """The progress bar and the Cancel button of a queued or running job."""
    import streamlit as st

    st.progress(float(progress), text=text)
    if st.button("Cancel", key=f"b_cancel_{job_id}"):  # two jobs on one page (an export, a timing): two keys
        runner().cancel(job_id, session_id)
        st.rerun()


def _show(job_id: str, session_id: str, s: dict) -> None:
    """A queued or running job's panel: plain elements watched by the page's poller inside a fragment (see the note
    above ``WATCHED``), else a fragment of its own refreshed every second."""
    import streamlit as st

    if in_fragment():
        if s["state"] not in (QUEUED, RUNNING):  # joined an identical job that has already ended
            st.rerun()  # the page takes its result (or shows the one-line error), as the fragment below does
        text = _text(s)
        st.session_state.setdefault(WATCHED, {})[job_id] = text
        _draw(job_id, session_id, s["progress"], text)
    else:
        _job_fragment(job_id, session_id)


def _job_fragment(job_id: str, session_id: str) -> None:
    import streamlit as st

    @st.fragment(run_every=1.0)
    def panel() -> None:
        s = runner().status(job_id)
        if s["state"] not in (QUEUED, RUNNING):
            st.rerun()  # the whole page takes the result (or shows the one-line error)
        _draw(job_id, session_id, s["progress"], _text(s))

    panel()
