"""The Class page through Streamlit's AppTest, with a teacher and students in separate sessions sharing one store
(SQLite and Postgres): the teacher (with the passcode or the one-time link) sets a challenge, a student submits, the
teacher's leaderboard shows it; a wrong passcode leaves the page read-only and cannot reset the board, and the pause
after too many survives a new session; the passcode never reaches the store or the log."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "dashboard"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import store  # noqa: E402
from db_backends import db_url  # noqa: E402,F401  (a fixture: SQLite and Postgres)

PAGE = str(ROOT / "dashboard" / "pages" / "classroom.py")
CODE = "tea-time-42"


@pytest.fixture
def db(db_url, monkeypatch):
    monkeypatch.setenv("COMPRESSION_LAB_TEACHER_CODE", CODE)
    old = store.database._STORE  # the server's one store (``store.get_store()``), replaced for this test
    store.database._STORE = store.Store(db_url)
    assert store.database._STORE.persistent, store.database._STORE.problem
    yield store.database._STORE
    store.database._STORE.engine.dispose()
    store.database._STORE = old


@pytest.fixture(scope="module")
def pruned_stats():
    """What the Explore page leaves in session state for digits-cnn at 90 % unstructured sparsity."""
    from compression_core.recipe import apply_recipe

    recipe = {"version": 1, "model": "digits-cnn", "seed": 0,
              "steps": [{"kind": "prune_unstructured", "amount": 0.9, "scope": "global", "include_classifier": False}]}
    return recipe, apply_recipe(recipe, with_latency=False, measure_before=False).after.model_dump()


def page(**session) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=120)
    for k, v in session.items():
        at.session_state[k] = v
    at.run()
    assert not at.exception, at.exception
    return at


def login(at: AppTest, code: str) -> AppTest:
    at.text_input(key="c_code").input(code)
    at.button[[b.label for b in at.button].index("Enter teacher mode")].click().run()
    assert not at.exception, at.exception
    return at


def texts(at: AppTest) -> str:
    return " ".join(x.value for kind in ("success", "warning", "info", "error", "caption", "subheader", "markdown")
                    for x in at.get(kind))


def test_teacher_sets_a_challenge_student_submits_teacher_sees_it(db, pruned_stats, caplog):
    caplog.set_level(logging.DEBUG)
    recipe, stats = pruned_stats
    teacher = page()
    assert "No challenge yet" in texts(teacher)
    assert not [b for b in teacher.button if b.key == "c_reset"]  # read-only before the passcode
    login(teacher, CODE)
    assert "Teacher mode" in texts(teacher)
    teacher.selectbox(key="c_model").set_value("digits-cnn")
    teacher.number_input(key="c_limit_max_size").set_value(100.0)
    teacher.button(key="c_set").click().run()
    assert not teacher.exception
    assert "best accuracy under 100 KB on digits-cnn" in texts(teacher)

    student = page(current_recipe=recipe, current_stats=stats)
    assert "best accuracy under 100 KB on digits-cnn" in texts(student)
    assert not [b for b in student.button if b.key in ("c_reset", "c_set")]
    student.text_input(key="c_name").input("Ada").run()
    student.button(key="c_submit").click().run()
    assert not student.exception and not student.error, [e.value for e in student.error]
    assert "Your rank: 1 of 1" in texts(student)

    teacher.run()  # the teacher's next refresh (the board fragment refreshes every 3 s in a browser)
    board = teacher.table[0].value
    assert list(board["name"]) == ["Ada"] and list(board["accuracy (%)"]) == [round(stats["accuracy"] * 100, 2)]
    chart = teacher.get("plotly_chart")
    assert any("Ada" in str(c.proto.spec) for c in chart)

    # the passcode is in no log record, no stored row and no saved setting
    assert CODE not in caplog.text
    with db.engine.connect() as c:
        for table in ("experiments", "settings", "challenges", "submissions"):
            assert CODE not in str(c.exec_driver_sql(f"SELECT * FROM {table}").all())


def test_wrong_passcode_is_read_only_and_cannot_reset(db, pruned_stats):
    recipe, stats = pruned_stats
    db.set_challenge({"kind": "max_size", "model": "digits-cnn", "metric": "accuracy", "limit": 100.0})
    db.submit("student-browser-1", "Ada", {"accuracy": stats["accuracy"], "size_kb": 50.0, "label": "x"})
    intruder = login(page(), "tea-time-41")
    assert any("Wrong passcode" in e.value for e in intruder.error)
    assert "Teacher mode:" not in texts(intruder)
    assert not [b for b in intruder.button if b.key in ("c_reset", "c_set")]
    assert not [c for c in intruder.checkbox if c.key == "c_sure"]
    assert not db.is_teacher(intruder.session_state["_browser_id"])
    assert len(db.submissions()) == 1  # the board is untouched
    for _ in range(store.MAX_TRIES - 1):
        login(intruder, "guess")
    assert any("Too many wrong passcodes" in e.value for e in intruder.error)
    login(intruder, CODE)  # even the right code waits out the pause
    assert not [b for b in intruder.button if b.key == "c_reset"]
    assert not db.is_teacher(intruder.session_state["_browser_id"])


def test_the_passcode_pause_survives_a_new_session_and_the_teacher_link_still_works(db):
    """A reload, a new tab or a new browser is a new session (and a new identity): the pause is the server's, per
    client address, so it still holds; the one-time teacher link is not locked by it and works exactly once."""
    for _ in range(store.MAX_TRIES):
        login(page(), "guess")  # every try from a fresh session
    fresh = page()
    assert any("Too many wrong passcodes" in e.value for e in fresh.error)
    assert [b for b in fresh.button if b.label == "Enter teacher mode"][0].disabled
    # a client that sends the click anyway (the check is the server's): refused, however right the passcode
    assert db.passcode_attempt(store.client_key(None)) > store.PAUSE_S / 2
    assert not [b for b in fresh.button if b.key in ("c_reset", "c_set")] and "Teacher mode:" not in texts(fresh)

    token = db.new_teacher_link()  # what dashboard/server.py prints on its console at start
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.query_params["teacher"] = token
    at.run()
    assert not at.exception and "one-time link" in texts(at) and "Teacher mode:" in texts(at)
    assert "teacher" not in at.query_params  # out of the address bar
    assert [b for b in at.button if b.key == "c_set"]
    again = AppTest.from_file(PAGE, default_timeout=120)  # the same link in another browser: spent
    again.query_params["teacher"] = token
    again.run()
    assert any("used already" in e.value for e in again.error) and "Teacher mode:" not in texts(again)
    assert not [b for b in again.button if b.key == "c_set"]


def test_an_old_url_id_grants_nothing(db):
    """``?u=`` was the identity before the cookie: now it is ignored, removed from the address, and the session gets
    its own key; rows stored under the old id stay in the database, out of reach."""
    db.set_challenge({"kind": "max_size", "model": "digits-cnn", "metric": "accuracy", "limit": 100.0})
    db.submit("OldUrlId0123456", "Ada", {"accuracy": 0.9, "size_kb": 50.0, "label": "x"})
    db.save_experiment("OldUrlId0123456", {"key": "k", "model": "digits-cnn", "label": "mine", "accuracy": 0.9})
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.query_params["u"] = "OldUrlId0123456"
    at.run()
    assert not at.exception
    assert "u" not in at.query_params and at.session_state["_browser_id"] != "OldUrlId0123456"
    assert "You have not submitted yet." in texts(at) and "Your rank" not in texts(at)
    assert store.valid_browser_id(at.session_state["_browser_id"]) and at.session_state["_browser_id"].startswith("k")
    assert len(db.experiments("OldUrlId0123456")) == 1  # still stored


def test_teacher_resets_the_board(db):
    db.set_challenge({"kind": "max_size", "model": "digits-cnn", "metric": "accuracy", "limit": 20.0})
    db.submit("student-browser-1", "Ada", {"accuracy": 0.9, "size_kb": 10.0})
    teacher = login(page(), CODE)
    teacher.checkbox(key="c_sure").check().run()
    teacher.button(key="c_reset").click().run()
    assert not teacher.exception
    assert db.submissions() == [] and any("Removed 1" in s.value for s in teacher.success)


def test_without_a_configured_code_there_is_no_teacher_mode(db, monkeypatch):
    monkeypatch.delenv("COMPRESSION_LAB_TEACHER_CODE")
    at = page()
    assert "Teacher mode is off" in texts(at) and "one-time teacher link" in texts(at)
    assert not [t for t in at.text_input if t.key == "c_code"]


# ------------------------------------------------------------------------------------------------ real browsers
def _serve(tmp_path: Path, code: str):
    import os
    import subprocess

    from benchmarks.local_app import free_port, streamlit_argv, wait_healthy

    port = free_port()
    env = {**os.environ, "COMPRESSION_LAB_TEACHER_CODE": code, "COMPRESSION_LAB_DB": str(tmp_path / "class.db")}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", *streamlit_argv(port)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wait_healthy(port, proc, 120)
    return proc, f"http://127.0.0.1:{port}"


def _idle(page) -> None:
    page.wait_for_timeout(300)
    page.wait_for_function("!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=90_000)


@pytest.mark.browser
@pytest.mark.slow
def test_two_browsers_student_submits_teacher_sees_it_reload_keeps_work(tmp_path):
    """Teacher and student in two browser contexts (separate cookies and sessions) against one real server: the
    teacher sets the challenge; the student prunes on Explore, saves, submits on the Class page; the teacher's board
    shows it without a reload; an intruder's wrong passcode finds no reset; the student's reload (F5) brings back the
    slider, and the saved row is in the history."""
    from benchmarks.local_app import CHROMIUM, CHROMIUM_ARGS, stop

    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    proc, url = _serve(tmp_path, CODE)
    try:
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            teacher = b.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            student = b.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            intruder = b.new_context(viewport={"width": 1400, "height": 1000}).new_page()

            teacher.goto(url + "/classroom")
            teacher.get_by_text("No challenge yet").wait_for(timeout=120_000)
            _idle(teacher)  # the page's first run finished: a later delta cannot redraw the form under the typing
            teacher.get_by_text("Teacher", exact=True).click()
            teacher.get_by_label("Teacher passcode").fill(CODE)
            teacher.get_by_role("button", name="Enter teacher mode").click()
            teacher.get_by_text("Teacher mode: you can set").wait_for(timeout=60_000)
            limit = teacher.get_by_label("Size limit (KB)")
            limit.fill("100")
            limit.press("Enter")
            _idle(teacher)
            teacher.get_by_role("button", name="Set challenge (starts a new, empty board)").click()
            teacher.get_by_text("Challenge: best accuracy under 100 KB on digits-cnn").wait_for(timeout=60_000)

            page_errors: list[str] = []  # the blank page this test found showed as 'Bad delta path index ...'
            student.on("pageerror", lambda e: page_errors.append(str(e)))
            student.goto(url)
            student.locator(".js-plotly-plot").first.wait_for(timeout=120_000)
            _idle(student)
            assert "u=" not in student.url  # the identity is an HttpOnly cookie, never in the address
            student.get_by_text("unstructured (weights)", exact=True).click()
            _idle(student)
            slider = student.locator('[data-testid="stSlider"] input[type="range"]').first
            slider.wait_for(state="attached", timeout=60_000)
            slider.focus()
            for _ in range(8):
                student.keyboard.press("ArrowRight")
            _idle(student)
            assert not [e for e in page_errors if "delta path" in e], page_errors
            moved = slider.input_value()
            student.get_by_role("button", name="Save to history").click()
            student.get_by_text("Saved as row").wait_for(timeout=60_000)
            # F5: the same address and identity cookie, the slider where it was
            address = student.url
            student.reload()
            student.locator(".js-plotly-plot").first.wait_for(timeout=120_000)
            _idle(student)
            assert student.url == address
            slider = student.locator('[data-testid="stSlider"] input[type="range"]').first
            slider.wait_for(state="attached", timeout=60_000)
            assert slider.input_value() == moved
            student.get_by_role("link", name="Class").click()
            student.get_by_text("Challenge: best accuracy under 100 KB").wait_for(timeout=60_000)
            name = student.get_by_label("Display name (shown on the board; no account)")
            name.fill("Ada")
            name.press("Enter")
            _idle(student)
            student.get_by_role("button", name="Submit to the challenge").click()
            student.get_by_text("Your rank: 1 of 1").wait_for(timeout=60_000)

            # the teacher's board refreshes itself (fragment, every 3 s): no reload
            teacher.locator("table").get_by_text("Ada").wait_for(timeout=30_000)

            intruder.goto(url + "/classroom")
            intruder.get_by_text("Challenge: best accuracy under 100 KB").wait_for(timeout=120_000)
            intruder.get_by_text("Teacher", exact=True).click()
            intruder.get_by_label("Teacher passcode").fill("not-the-code")
            intruder.get_by_role("button", name="Enter teacher mode").click()
            intruder.get_by_text("Wrong passcode").wait_for(timeout=60_000)
            assert intruder.get_by_role("button", name="Reset the board").count() == 0
            assert intruder.get_by_role("button", name="Set challenge (starts a new, empty board)").count() == 0
            assert intruder.locator("table").get_by_text("Ada").count() == 1  # the board is intact

            # the saved row is in the student's history (Experiments page), by its name
            student.get_by_role("link", name="Experiments").click()
            student.get_by_text("Your history").wait_for(timeout=60_000)
            # waited for, not counted at once: the table and the Row picker are drawn a moment after the page is idle
            student.wait_for_function("document.body.textContent.includes('prune_unstructured')", timeout=30_000)
            b.close()
    finally:
        stop(proc)
