"""The Class page through Streamlit's AppTest, with a teacher and students in separate sessions sharing one store:
the teacher (with the passcode) sets a challenge, a student submits, the teacher's leaderboard shows it; a wrong
passcode leaves the page read-only and cannot reset the board; the passcode never reaches the store or the log."""

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

PAGE = str(ROOT / "dashboard" / "pages" / "classroom.py")
CODE = "tea-time-42"


@pytest.fixture
def db(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESSION_LAB_TEACHER_CODE", CODE)
    old = store._STORE
    store._STORE = store.Store(f"sqlite:///{tmp_path / 'class.db'}")
    yield store._STORE
    store._STORE = old


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
    assert intruder.session_state["c_teacher"] is not True if "c_teacher" in intruder.session_state else True
    assert len(db.submissions()) == 1  # the board is untouched
    for _ in range(store_tries() - 1):
        login(intruder, "guess")
    assert any("Too many wrong passcodes" in e.value for e in intruder.error)
    login(intruder, CODE)  # even the right code waits out the pause
    assert not [b for b in intruder.button if b.key == "c_reset"]


def store_tries() -> int:
    src = Path(PAGE).read_text()
    return int(src.split("MAX_TRIES = ")[1].split()[0])


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
    assert "Teacher mode is off" in texts(at)
    assert not [t for t in at.text_input if t.key == "c_code"]
