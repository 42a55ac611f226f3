"""A hostile student against a class server: every model reference a browser can send goes through ONE validator
(``dashboard/trust.py``) and must be one of the server's listed workloads (registered names, ``--workload`` flags);
anything else is refused in one line naming them, before anything is imported or called.

The corpus is ``benchmarks.fuzz.dashboard_corpus`` (stdlib functions such as ``os:abort``, ``os:getpid``,
``builtins:exit``, ``subprocess:run``; absolute and ``../`` paths to files on the server; packages that print or exit
on import, written into tmp_path and put on ``sys.path``; another function in a listed workload file; oversize,
stale and path-shaped uploads). It runs through the validator, the job runner's ``submit`` and the Recipe page
(AppTest) while an audit hook (``sys.addaudithook``; a no-op unless its flag is on) and a profile hook record imports,
exec, processes and calls: none may happen. A positive control shows the hooks do see them under ``--trust-uploads``.
The browser test does the same against a real server and checks another student's slider keeps working.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from benchmarks import fuzz
from browser_helpers import launch, needs_chromium, wait_idle

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT, ROOT / "dashboard"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import trust  # noqa: E402

LISTED = ["digits-mlp", "digits-cnn"]


# ------------------------------------------------------------------------------------------------ the validator
def test_listed_models_are_the_registered_names_and_the_command_lines_workloads(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["--workload", "mine.py:workload", "--workload", "pkg.mod:make", "--db", "x.db"]
    listed = trust.listed_models(argv)
    assert set(LISTED) <= set(listed)
    assert f"{tmp_path.resolve() / 'mine.py'}:workload" in listed and "pkg.mod:make" in listed  # as pages list them
    for ref in ("digits-mlp", "mine.py:workload", f"{tmp_path.resolve() / 'mine.py'}:workload", "pkg.mod:make",
                "./mine.py:workload"):  # as typed on the command line, as a page lists it, or the same file
        assert trust.check_model_reference(ref, argv) == ref
    assert not (tmp_path / "mine.py").exists()  # listing a reference reads nothing


@pytest.mark.parametrize("ref", ["os:abort", "os:getpid", "builtins:exit", "subprocess:run", "/etc/passwd:x",
                                 "../mine.py:workload", "mine.py:other", "./mine.py:other", "DIGITS-MLP",
                                 "digits-mlp\nos:abort", "", " ", None, 5, ["os", "abort"], "x" * 5000])
def test_anything_else_is_refused_in_one_line_naming_the_listed_models(ref, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["--workload", "mine.py:workload"]
    with pytest.raises(trust.Refused) as e:
        trust.check_model_reference(ref, argv)
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 600
    assert "digits-mlp" in msg and f"{tmp_path.resolve() / 'mine.py'}:workload" in msg
    from compression_core import CompressionError

    assert isinstance(e.value, CompressionError)  # the pages' one_line shows it as is
    assert not trust.is_listed(ref, argv)


def test_recipe_text_is_never_read_as_a_path_on_the_server(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    on_disk = tmp_path / "r.yaml"
    on_disk.write_text("version: 1\nmodel: digits-mlp\nseed: 0\nsteps: []\n")  # a valid recipe, on the server
    for text in (str(on_disk), "r.yaml", "/etc/passwd"):
        with pytest.raises(Exception) as e:
            trust.check_recipe(text, [])
        assert "\n" not in str(e.value) and "digits-mlp" not in str(e.value).split("choose")[0]
    assert trust.check_recipe(on_disk.read_text(), [])["model"] == "digits-mlp"
    assert trust.check_recipe(on_disk.read_bytes(), [])["model"] == "digits-mlp"


def test_a_recipe_naming_an_unlisted_model_is_refused_before_its_steps_are_judged():
    bad_steps = "version: 1\nmodel: os:abort\nsteps: [{kind: bogus}]\n"
    for recipe in (bad_steps, {"version": 1, "model": "os:abort", "steps": [{"kind": "bogus"}]},
                   '{"version": 1, "model": "os:getpid", "steps": 3}'):
        with pytest.raises(trust.Refused, match="is not one of this server's models"):
            trust.check_recipe(recipe, [])
    with pytest.raises(trust.Refused, match="'nope' is not one of"):  # the library's "or give file.py:attr" is not said
        trust.check_recipe("version: 1\nmodel: nope\nsteps: []\n", [])


def test_job_payloads_are_checked_at_submit_and_nothing_is_queued():
    import jobs

    r = jobs.JobRunner(jobs.Limits(workers=1, warm=False))
    try:
        for kind, payload in (("sensitivity", {"model": "os:getpid"}), ("fit", {"model": "/etc/x.py:wl"}),
                              ("search", {"model": "subprocess:run"}), ("advise", {"model": "builtins:exit"}),
                              ("recipe", {"recipe": {"version": 1, "model": "os:abort", "steps": []}}),
                              ("recipe", {"recipe": "version: 1\nmodel: os:abort\nsteps: []\n"}),
                              ("recipe", {"recipe": "/etc/passwd"}),
                              ("latency", {"model": "digits-mlp", "recipe": {"version": 1, "model": "os:abort",
                                                                             "steps": []}})):
            with pytest.raises(jobs.JobRefused) as e:
                r.submit(kind, payload, "mallory")
            assert "\n" not in str(e.value)
        assert not r.jobs and r._thread is None  # nothing queued, no worker started
        trust.check_job("sensitivity", {"model": "digits-mlp", "technique": "prune"})  # a listed one passes
    finally:
        r.shutdown()


def test_trust_uploads_is_off_by_default_and_opts_in(tmp_path, monkeypatch):
    assert not trust.trusted([]) and trust.banner([]) is None
    argv = ["--workload", "a.py:wl", "--trust-uploads"]
    assert trust.trusted(argv) and "--trust-uploads" in trust.banner(argv)
    assert trust.check_model_reference("/some/file.py:wl", argv) == "/some/file.py:wl"
    with pytest.raises(trust.Refused):
        trust.check_model_reference("", argv)


# ------------------------------------------------------------------------------------------------ the corpus
def test_corpus_is_refused_in_one_line_with_nothing_imported_or_called(tmp_path, monkeypatch):
    """Every corpus case through the validator, the job runner and the Recipe page (AppTest): one line each, 0
    imports, 0 exec, 0 processes, 0 watched calls, no file opened under the corpus, the hostile markers absent, and
    the page then still reproduces a listed recipe."""
    monkeypatch.chdir(tmp_path)
    r = fuzz.run_dashboard_hostile(str(tmp_path / "corpus"), page=True, budget_s=None, rss_budget_mb=None)
    assert r["failures"] == [], r["failures"][:10]
    assert r["events"] == [] and r["imports"] == 0 and r["calls"] == 0
    assert r["markers"] == [] and r["server_alive"]
    assert r["refused"] == r["cases"] >= 150
    assert {"validator", "jobs", "recipe page"} <= set(r["channels"])
    for m in ("cl_hostile_loud", "cl_hostile_exit"):
        assert m not in sys.modules


def test_the_hooks_see_hostile_code_when_it_does_run(tmp_path, monkeypatch, capsys):
    """The positive control: with --trust-uploads the same references pass the validator and the library runs them;
    the hooks then record the call of os.getpid, the server file executed and the package imported."""
    monkeypatch.chdir(tmp_path)
    seen = fuzz.audit_control(str(tmp_path / "control"))
    events = [f"{e}: {w}" for e, w in seen]
    assert ("call", "os.getpid") in seen
    assert any(e.startswith("exec: ") and e.endswith("evil_workload.py") for e in events), events
    assert any(e.startswith("exec: ") and "cl_hostile_loud" in e for e in events), events
    assert ("call", "compression_core.workload._build") in seen
    assert sorted(os.listdir(tmp_path / "control" / "markers"))  # and they left their markers


def test_recipe_page_refuses_a_foreign_model_and_reproduces_a_listed_one(tmp_path, monkeypatch):
    """The Recipe page with a server started with ``--workload FILE:workload``: the listed file's recipe is
    reproduced; ``FILE:other`` (not listed, same file) is one line and never called."""
    from streamlit.testing.v1 import AppTest

    corpus = fuzz.dashboard_corpus(str(tmp_path / "c"))
    monkeypatch.setattr(sys, "argv", ["app.py", *corpus["argv"]])
    listed = corpus["listed"]["the listed --workload"]
    at = AppTest.from_file(str(ROOT / "dashboard" / "pages" / "recipe.py"), default_timeout=120)
    at.run()
    for ref, ok in ((listed, True), (listed.rsplit(":", 1)[0] + ":other", False)):
        body = f"version: 1\nmodel: {json.dumps(ref)}\nseed: 0\nsteps:\n- kind: prune_unstructured\n  amount: 0.5\n"
        at.file_uploader(key="r_upload").set_value(("r.yaml", body.encode(), "application/x-yaml")).run()
        assert not at.exception
        if ok:
            assert not at.error and "Reproduced class-listed" in at.success[0].value, [e.value for e in at.error]
        else:
            assert len(at.error) == 1 and "is not one of this server's models" in at.error[0].value
            assert listed in at.error[0].value
    assert os.listdir(corpus["markers"]) == []


def test_trust_uploads_warning_is_stated_by_the_router_when_on(monkeypatch):
    """The router (``app.py``, which runs before every page) states ``--trust-uploads`` when it is on, else nothing."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr(sys, "argv", ["app.py", "--trust-uploads"])
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=300)
    at.run()
    assert not at.exception
    assert any("--trust-uploads" in w.value and "trust" in w.value for w in at.warning)
    monkeypatch.setattr(sys, "argv", ["app.py"])
    at.run()
    assert not at.exception and not any("--trust-uploads" in w.value for w in at.warning)


# ------------------------------------------------------------------------------------------------ the Class page
@pytest.fixture
def class_db(tmp_path, monkeypatch):
    import store

    monkeypatch.setenv("COMPRESSION_LAB_TEACHER_CODE", "tea-time-42")
    db = store.Store(f"sqlite:///{tmp_path / 'class.db'}")
    monkeypatch.setattr(store.database, "_STORE", db)
    db.set_challenge({"kind": "max_size", "model": "digits-cnn", "metric": "accuracy", "limit": 20.0,
                      "count_simulated": False})
    db.submit("a" * 32, "Ada", {"accuracy": 0.9861, "size_kb": 10.04, "model": "digits-cnn", "label": "int8"})
    db.submit("b" * 32, "=HYPERLINK(\"http://x\")", {"accuracy": 0.99, "size_kb": 50.0, "model": "digits-cnn",
                                                     "label": "+1"})
    return db


def test_class_board_formats_numbers_and_logs_no_traceback(class_db, capfd):
    """A ranked and an unranked student (rank "1" and "-" in one column): no pyarrow conversion traceback in the log
    (Streamlit's loggers write to stderr, each with its own handler: read as a server log is); accuracy shown with 2
    decimals as elsewhere in the app (not "98.6100")."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "dashboard" / "pages" / "classroom.py"), default_timeout=120)
    capfd.readouterr()
    at.run()
    at.run()  # what the board's 3 s refresh does
    log = capfd.readouterr().err
    assert not at.exception
    assert "Traceback" not in log and "Arrow" not in log, log[-2000:]
    board = at.table[0].value
    assert list(board.index) == ["1", "-"] and list(board["name"]) == ["Ada", "=HYPERLINK(\"http://x\")"]
    shown = str(at.table[0].proto)
    assert "98.61" in shown and "98.6100" not in shown and "10.0" in shown


def test_class_csv_has_every_current_row_with_iso_times_and_no_formulas(class_db):
    import store

    text = store.classroom.submissions_csv(class_db.challenge(), class_db.submissions())
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["display_name"] for r in rows] == ["Ada", "'=HYPERLINK(\"http://x\")"]  # a formula is shown, not run
    assert rows[1]["label"] == "'+1" and [r["meets_constraint"] for r in rows] == ["yes", "no"]
    for r in rows:
        t = datetime.fromisoformat(r["created"])
        assert t.tzinfo is not None and abs(t.timestamp() - time.time()) < 3600
    assert "a" * 32 not in text and "b" * 32 not in text  # no browser ids
    class_db.submit("c" * 32, "Late", {"accuracy": 0.5, "size_kb": 5.0, "model": "digits-cnn", "label": "x"})
    again = store.classroom.submissions_csv(class_db.challenge(), class_db.submissions())
    assert len(list(csv.DictReader(io.StringIO(again)))) == 3  # built from the rows at the time it is called


# ------------------------------------------------------------------------------------------------ a real browser
@pytest.mark.slow
@pytest.mark.browser
@needs_chromium
def test_browser_hostile_uploads_one_line_each_and_another_students_slider_keeps_working(tmp_path):
    """A real class server (``--workload FILE:workload --teacher-code``): student B uploads ``model: os:abort`` and a
    recipe naming a file on the server and sees one line each; student A's slider (another browser context) keeps
    working; the teacher's CSV, clicked on a page opened before two more submissions, has every row with ISO times;
    the server lives and its log has no traceback."""
    from playwright.sync_api import sync_playwright

    import store
    from benchmarks.local_app import free_port, start_app, stop

    corpus = fuzz.dashboard_corpus(str(tmp_path / "corpus"))
    evil = corpus["references"]["absolute path to a file on the server"]
    db_url = f"sqlite:///{tmp_path / 'class.db'}"
    port = free_port()
    proc = start_app(port, timeout=180, app_args=[*corpus["argv"], "--db", db_url, "--teacher-code", "tea-time-42"])
    url = f"http://127.0.0.1:{port}"
    try:
        with sync_playwright() as p:
            browser = launch(p)
            a = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
            a.goto(url)
            a.locator(".js-plotly-plot").first.wait_for(timeout=180_000)
            _idle(a)
            a.get_by_text("unstructured (weights)", exact=True).click()
            _idle(a)
            nonzero = _nonzero_after_slider(a)

            b = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
            b.goto(url)
            _idle(b)
            b.get_by_role("link", name="Recipe").click()
            b.get_by_text("Import a recipe and reproduce it").wait_for(timeout=60_000)
            for name, body in (("abort.yaml", "version: 1\nmodel: os:abort\nsteps: []\n"),
                               ("file.yaml", f"version: 1\nmodel: {json.dumps(evil)}\nseed: 0\nsteps: []\n")):
                path = tmp_path / name
                path.write_text(body)
                b.locator("[data-testid=stFileUploader]").filter(has_text="Recipe file").locator(
                    "input[type=file]").set_input_files(str(path))
                b.locator('[data-testid="stAlertContentError"]').first.wait_for(timeout=60_000)
                _idle(b)
                errors = b.locator('[data-testid="stAlertContentError"]').all_inner_texts()
                assert len(errors) == 1 and "is not one of this server's models" in errors[0], errors
                assert "\n" not in errors[0].strip() and "digits-cnn" in errors[0]
                assert not b.locator('[data-testid="stException"]').count()
            assert proc.poll() is None and os.listdir(corpus["markers"]) == []

            assert _nonzero_after_slider(a) != nonzero  # student A's slider still moves the numbers

            # the teacher's page is open before the last submissions; the CSV is built when clicked
            db = store.Store(db_url)
            db.set_challenge({"kind": "max_size", "model": "digits-cnn", "metric": "accuracy", "limit": 20.0,
                              "count_simulated": False})
            t = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True).new_page()
            t.goto(url)
            _idle(t)
            t.get_by_role("link", name="Class").click()
            _idle(t)
            t.get_by_text("Teacher", exact=True).first.click()
            _idle(t)  # (under the full suite's load a passcode typed while the page still redrew was lost)
            t.get_by_label("Teacher passcode").fill("tea-time-42")
            t.get_by_role("button", name="Enter teacher mode").click()
            t.get_by_text("Download all submissions (CSV)").wait_for(timeout=60_000)
            _idle(t)
            for i in range(3):
                db.submit(f"{i}" * 32, f"student {i}", {"accuracy": 0.9 + i / 100, "size_kb": 10.0 + i,
                                                         "model": "digits-cnn", "label": "int8"})
            t.wait_for_timeout(500)
            with t.expect_download() as info:
                t.get_by_text("Download all submissions (CSV)").click()
            rows = list(csv.DictReader(io.StringIO(Path(info.value.path()).read_text())))
            assert [r["display_name"] for r in rows] == ["student 0", "student 1", "student 2"]
            assert all(datetime.fromisoformat(r["created"]).tzinfo is not None for r in rows)
            assert not t.locator('[data-testid="stException"]').count()
            browser.close()
    finally:
        stop(proc)
        log = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    assert "Traceback" not in log, log[-3000:]
    assert "imported on the server" not in log


def _idle(page) -> None:
    wait_idle(page, 300)


def _nonzero_after_slider(page) -> str:
    """Move the Explore page's first slider a few steps right; the non-zero parameter count once it changed."""
    slider = page.locator("[data-testid=stSlider] input[type=range], [data-testid=stSlider] [role=slider]").first
    slider.wait_for(state="attached", timeout=60_000)
    metric = page.locator('[data-testid="stMetric"]').nth(2)
    before = metric.inner_text()
    slider.focus()
    for _ in range(4):
        page.keyboard.press("ArrowRight")
    page.wait_for_function("([el, t]) => el.innerText !== t", arg=[metric.element_handle(), before], timeout=120_000)
    _idle(page)
    return metric.inner_text()


@pytest.mark.slow
def test_no_page_logs_a_traceback(tmp_path, monkeypatch, capfd):
    """Every page of the app (AppTest, the router first) with the log read as a server's (Streamlit's loggers write
    to stderr): no traceback, no Arrow conversion fix-up, no exception on the page. The Class page has a ranked and
    an unranked student."""
    from streamlit.testing.v1 import AppTest

    import store

    monkeypatch.setenv("COMPRESSION_LAB_TEACHER_CODE", "tea-time-42")
    db = store.Store(f"sqlite:///{tmp_path / 'class.db'}")
    monkeypatch.setattr(store.database, "_STORE", db)
    db.set_challenge({"kind": "max_size", "model": "digits-cnn", "metric": "accuracy", "limit": 20.0,
                      "count_simulated": False})
    db.submit("a" * 32, "Ada", {"accuracy": 0.9861, "size_kb": 10.0, "model": "digits-cnn", "label": "int8"})
    db.submit("b" * 32, "Bob", {"accuracy": 0.99, "size_kb": 50.0, "model": "digits-cnn", "label": "fp32"})
    problems = {}
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=600)
    at.run()
    pages = sorted(p.name for p in (ROOT / "dashboard" / "pages").glob("*.py") if not p.name.startswith("_"))
    for name in ["explore.py", *[p for p in pages if p != "explore.py"]]:
        capfd.readouterr()
        at.switch_page(f"pages/{name}").run()
        log = capfd.readouterr().err
        bad = [line[:160] for line in log.splitlines() if "Traceback" in line or "Arrow" in line or " ERROR " in line]
        if at.exception or bad:
            problems[name] = [str(e.value)[:160] for e in at.exception] + bad
    assert problems == {}
