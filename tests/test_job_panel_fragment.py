"""The job panel never creates a fragment inside another one (a nested fragment could blank the page: the note above
``WATCHED`` in dashboard/jobs/panel.py): drawn inside a fragment it is plain elements (progress, Cancel) that the
page's poller watches; drawn at the top level it stays a fragment of its own. The job runner is faked (no worker)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "dashboard"))

from jobs import panel  # noqa: E402
from jobs.pool import CANCELLED, DONE, QUEUED, RUNNING  # noqa: E402

# One job drawn inside a fragment ("in"), one at the top level ("top"). The script records which fragments its run
# registered, and those nested in another one (the storage's parent links: what Streamlit's fragment code uses).
SCRIPT = """
import sys
sys.path.insert(0, {dashboard!r})
import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx
import jobs
from jobs import panel

st.session_state["changed"] = panel.jobs_changed()  # what the page's poller would see before this run
storage = get_script_run_ctx().fragment_storage
before = storage.registration_sequence()


@st.fragment
def outer():
    panel.reset_watched()
    st.session_state["result"] = jobs.job_panel("sleep", {{"seconds": 30}}, "in", "sid", label="Start inside")


outer()
jobs.job_panel("faster", {{"seconds": 31}}, "top", "sid", label="Start at the top")
new = storage.ids_registered_after(before)
st.session_state["registered"] = len(new)
st.session_state["nested"] = sorted(i for i in new if storage.has_ancestor_in(i, new))
st.session_state["watched"] = panel.jobs_watched()
"""


class FakeRunner:
    """``JobRunner``'s page-facing methods over jobs whose status the test sets."""

    def __init__(self):
        self.jobs: dict[str, dict] = {}

    def submit(self, kind, payload, session_id):
        job_id = f"j{len(self.jobs) + 1}"
        self.jobs[job_id] = {"id": job_id, "kind": kind, "state": QUEUED, "queue_position": 1, "progress": 0.0,
                             "message": "", "elapsed_s": 0.0}
        return job_id

    def status(self, job_id):
        return dict(self.jobs[job_id])

    def summary(self):
        return {"queued": 1, "running": 0, "workers": 1}

    def cancel(self, job_id, session_id=None):
        self.jobs[job_id].update(state=CANCELLED, error="sleep job cancelled")
        return True

    def attach(self, *args, **kwargs):
        pass


@pytest.fixture
def app(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    fake = FakeRunner()
    monkeypatch.setattr(panel, "runner", lambda: fake)
    script = tmp_path / "panel_in_fragment.py"
    script.write_text(SCRIPT.format(dashboard=str(ROOT / "dashboard")))
    at = AppTest.from_file(str(script), default_timeout=30)
    return at, fake


def texts(at) -> list[str]:
    return [p.proto.text for p in at.get("progress")]


def test_a_job_panel_inside_a_fragment_is_plain_elements_watched_by_the_page(app):
    at, fake = app
    at.run()
    assert not at.exception, at.exception
    assert at.session_state["nested"] == [] and not at.session_state["watched"]

    at.button(key="b_job_sleep").click().run()  # the one inside the fragment
    assert not at.exception, at.exception
    (job_id,) = fake.jobs
    assert texts(at) == ["waiting for a worker: position 1 in the queue (0 running on 1 worker process(es))"]
    assert [b.key for b in at.button if b.key.startswith("b_cancel_")] == [f"b_cancel_{job_id}"]
    assert at.session_state["nested"] == [], "a fragment was created inside the outer fragment"
    assert at.session_state["registered"] == 1  # the outer fragment only: the panel drew no fragment of its own
    assert at.session_state["watched"] and at.session_state["result"] is None

    at.run()  # nothing moved: the poller would not rerun the page
    assert at.session_state["changed"] is False
    fake.jobs[job_id].update(state=RUNNING, queue_position=0, progress=0.4, message="step 2 of 5", elapsed_s=3.2)
    at.run()  # running now: the poller sees it and reruns the page, which shows the progress
    assert at.session_state["changed"] is True
    assert texts(at) == ["running (3 s): step 2 of 5"] and at.get("progress")[0].proto.value == 40

    at.button(key=f"b_cancel_{job_id}").click().run()
    assert fake.jobs[job_id]["state"] == CANCELLED
    assert [e.value for e in at.error] == ["sleep job cancelled"] and not at.get("progress")
    assert not at.session_state["watched"]  # nothing left to poll: the page's poller turns off


def test_the_page_takes_the_result_when_the_job_ends(app):
    at, fake = app
    at.run()
    at.button(key="b_job_sleep").click().run()
    (job_id,) = fake.jobs
    fake.jobs[job_id].update(state=DONE, result={"slept": 30})
    at.run()
    assert not at.exception, at.exception
    assert at.session_state["changed"] is True  # a finished job always changes what its panel shows
    assert at.session_state["result"] == {"slept": 30} and not at.get("progress") and not at.session_state["watched"]


def test_a_job_panel_at_the_top_level_stays_a_fragment_of_its_own(app):
    at, fake = app
    at.run()
    at.button(key="b_job_faster").click().run()  # the one at the top level
    assert not at.exception, at.exception
    assert at.session_state["registered"] == 2 and at.session_state["nested"] == []  # outer + the panel's own
    assert len(texts(at)) == 1 and not at.session_state["watched"]  # a fragment refreshes itself: not watched


@pytest.mark.slow
def test_explore_training_job_panel_is_no_nested_fragment_and_arms_the_poller(tmp_path, monkeypatch):
    """Explore's training panel runs inside the workbench fragment: it registers no fragment there, shows the
    progress and Cancel, and the page's top-level poller is armed while the job waits; a cancel disarms it."""
    from streamlit.runtime.fragment import MemoryFragmentStorage
    from streamlit.testing.v1 import AppTest

    import store

    fake = FakeRunner()
    monkeypatch.setattr(panel, "runner", lambda: fake)
    monkeypatch.setattr(store.database, "_STORE", store.Store(f"sqlite:///{tmp_path / 'h.db'}"))
    parents: list[str | None] = []  # the parent fragment of every fragment registered
    register = MemoryFragmentStorage.register

    def recording(self, key, fragment, **kwargs):
        parents.append(kwargs.get("parent_fragment_id"))
        return register(self, key, fragment, **kwargs)

    monkeypatch.setattr(MemoryFragmentStorage, "register", recording)
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=180)
    at.run()
    at.selectbox(key="x_model").set_value("digits-mlp").run()
    at.radio(key="x_prune_digits-mlp").set_value("unstructured (weights)").run()
    at.checkbox(key="x_on_finetune").check().run()
    assert not at.exception, at.exception
    parents.clear()
    at.button(key="b_run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    (job_id,) = fake.jobs
    assert fake.jobs[job_id]["kind"] == "recipe"
    assert parents and all(p is None for p in parents), "a fragment was registered inside another one"
    assert at.get("progress") and at.button(key=f"b_cancel_{job_id}")
    assert at.session_state["_x_poll_armed"] and list(at.session_state[panel.WATCHED]) == [job_id]
    at.button(key=f"b_cancel_{job_id}").click().run()
    assert not at.exception and not at.get("progress") and at.session_state[panel.WATCHED] == {}
    assert not at.session_state["_x_poll_armed"] or at.session_state["_x_stage_polled"]  # armed for a stage only
