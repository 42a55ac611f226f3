"""Peak RAM as a class-challenge constraint (issue 24 item 4): the teacher can set a max peak RAM; a submission over
it, or without a figure, is listed as not meeting the constraint; the board and the CSV show it."""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "dashboard"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import store  # noqa: E402
from store import classroom as C  # noqa: E402

CH = {"kind": "max_size", "model": "digits-cnn", "metric": "accuracy", "limit": 100.0, "max_ram_kb": 50.0}


def sub(browser: str, accuracy: float, size_kb: float, ram: float | None, created: float) -> dict:
    return {"browser": browser, "display_name": browser, "accuracy": accuracy, "size_kb": size_kb,
            "peak_ram_kb": ram, "created": created, "label": "x", "model": "digits-cnn"}


def test_the_ram_limit_is_part_of_meeting_the_constraint():
    assert C.max_ram_kb(CH) == 50.0 and C.max_ram_kb({**CH, "max_ram_kb": None}) is None
    assert "peak RAM at most 50 KB" in C.challenge_text(CH)
    assert "peak RAM" not in C.challenge_text({**CH, "max_ram_kb": None})
    assert C.qualifies(CH, 0.9, 40.0, 49.0) and not C.qualifies(CH, 0.9, 40.0, 51.0)
    assert not C.qualifies(CH, 0.9, 40.0, None)  # no figure: it cannot show it meets the limit
    assert C.qualifies({**CH, "max_ram_kb": None}, 0.9, 40.0, None)  # no limit: as before
    assert C.qualifies({**CH, "max_ram_kb": 0}, 0.9, 40.0)  # 0 = no limit
    assert not C.qualifies(CH, 0.9, 140.0, 10.0)  # the size limit still holds


def test_the_board_ranks_only_submissions_within_the_ram_limit_and_the_csv_says_so():
    subs = [sub("big-ram", 0.99, 40.0, 80.0, 1.0), sub("small-ram", 0.95, 45.0, 30.0, 2.0),
            sub("no-figure", 0.97, 30.0, None, 3.0)]
    board = C.leaderboard(CH, subs)
    assert [(r["browser"], r["rank"]) for r in board] == [("small-ram", 1), ("big-ram", None), ("no-figure", None)]
    rows = list(csv.DictReader(io.StringIO(C.submissions_csv(CH, subs))))
    assert [(r["display_name"], r["peak_ram_kb"], r["meets_constraint"]) for r in rows] == [
        ("big-ram", "80.0", "no"), ("small-ram", "30.0", "yes"), ("no-figure", "", "no")]


@pytest.mark.slow
def test_teacher_sets_a_ram_limit_and_a_submission_over_it_is_unranked(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from compression_core.recipe import apply_recipe

    monkeypatch.setenv("COMPRESSION_LAB_TEACHER_CODE", "tea-time-42")
    old = store.database._STORE
    store.database._STORE = store.Store(f"sqlite:///{tmp_path / 'class.sqlite3'}")
    try:
        recipe = {"version": 1, "model": "digits-cnn", "seed": 0, "steps": [{"kind": "quantize_dynamic"}]}
        stats = apply_recipe(recipe, with_latency=False, measure_before=False).after.model_dump()
        ram_kb = stats["peak_ram_bytes_b1"] / 1024
        page = str(ROOT / "dashboard" / "pages" / "classroom.py")
        teacher = AppTest.from_file(page, default_timeout=120)
        teacher.run()
        teacher.text_input(key="c_code").input("tea-time-42")
        teacher.button[[b.label for b in teacher.button].index("Enter teacher mode")].click().run()
        teacher.selectbox(key="c_model").set_value("digits-cnn")
        teacher.number_input(key="c_limit_max_size").set_value(1000.0)
        teacher.number_input(key="c_max_ram").set_value(round(ram_kb / 2, 1))  # half what the model needs
        teacher.button(key="c_set").click().run()
        assert not teacher.exception
        assert f"peak RAM at most {round(ram_kb / 2, 1):g} KB" in store.challenge_text(store.database._STORE.challenge())

        student = AppTest.from_file(page, default_timeout=120)
        student.session_state["current_recipe"] = recipe
        student.session_state["current_stats"] = stats
        student.run()
        shown = " ".join(c.value for c in student.caption)
        assert f"{ram_kb:,.1f} KB peak RAM: does NOT meet the constraint (peak RAM {ram_kb:,.1f} KB is over" in shown
        student.text_input(key="c_name").input("Ada").run()
        student.button(key="c_submit").click().run()
        assert not student.exception and not student.error, [e.value for e in student.error]
        assert "does not meet the constraint yet" in " ".join(w.value for w in student.warning)
        board = student.table[0].value
        assert list(board["meets the constraint"]) == ["no"] and list(board["peak RAM (KB)"]) == [f"{ram_kb:,.1f}"]
        (sub_row,) = store.database._STORE.submissions()
        assert sub_row["peak_ram_kb"] == pytest.approx(ram_kb)
    finally:
        store.database._STORE.engine.dispose()
        store.database._STORE = old
