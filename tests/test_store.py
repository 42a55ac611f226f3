"""The dashboard's store: history, settings, the class room and the teacher's rights, on SQLite (WAL, transactions,
schema version) and on Postgres (``db_url`` runs those tests on both; Postgres needs COMPRESSION_LAB_TEST_PG), one
line and a memory fallback for a corrupt, locked or newer database, every committed row surviving ``kill -9``."""

from __future__ import annotations

import csv
import io
import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "dashboard"))

import store  # noqa: E402
from db_backends import db_url, fresh_postgres_database, postgres_base  # noqa: E402,F401  (db_url: a fixture)


def url(path: Path) -> str:
    return f"sqlite:///{path}"


def row(i: int, **kw) -> dict:
    return {"key": f"recipe-{i}", "model": "digits-cnn", "label": f"prune {i / 10:.1f}", "accuracy": 0.9 + i / 1000,
            "size_bytes": 1000 - i, "sparse_KB": 0.5, "simulated": False, "recipe": {"steps": [{"amount": i / 10}]},
            **kw}


def test_history_is_kept_per_browser_with_rename_delete_and_export(db_url):
    s = store.Store(db_url)
    assert s.problem is None and s.persistent
    a = s.save_experiment("alice-browser", row(1), "applied")
    b = s.save_experiment("alice-browser", row(2), "saved", name="my best")
    s.save_experiment("bob-browser-1", row(1), "saved")
    assert s.save_experiment("alice-browser", row(1, latency_ms=1.5), "saved") == a  # same configuration: one row
    mine = s.experiments("alice-browser")
    assert [r["id"] for r in mine] == [a, b]
    assert mine[0]["how"] == "saved" and mine[0]["latency_ms"] == 1.5 and mine[1]["name"] == "my best"
    assert s.rename("alice-browser", a, "first\ntry ") and s.experiments("alice-browser")[0]["name"] == "first try"
    assert not s.rename("bob-browser-1", a, "not yours")  # another browser cannot touch it
    with pytest.raises(store.StoreError):
        s.rename("alice-browser", a, "   ")
    got = list(csv.DictReader(io.StringIO(s.export_csv("alice-browser"))))
    assert [g["name"] for g in got] == ["first try", "my best"] and json.loads(got[1]["recipe"])["steps"]
    assert json.loads(s.export_json("alice-browser"))[1]["label"] == "prune 0.2"
    assert s.delete("alice-browser", b) and not s.delete("bob-browser-1", a)
    assert [r["id"] for r in s.experiments("alice-browser")] == [a]
    assert len(s.experiments("bob-browser-1")) == 1
    s.close()
    again = store.Store(db_url)  # a restart finds everything
    assert again.problem is None and again.persistent
    assert [r["name"] for r in again.experiments("alice-browser")] == ["first try"]
    with again.engine.connect() as c:
        if again.engine.dialect.name == "sqlite":
            assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert c.exec_driver_sql("SELECT version FROM schema_version").scalar() == store.SCHEMA_VERSION
    assert again.integrity() == "ok"


def test_settings_are_coalesced_and_survive_a_restart(db_url):
    s = store.Store(db_url, settings_delay_s=0.05)
    for amount in (0.1, 0.2, 0.3):
        s.save_settings("alice-browser", {"x_model": "digits-mlp", "x_amount": amount})
    assert s.load_settings("alice-browser")["x_amount"] == 0.3  # readable at once
    s.flush()
    assert store.Store(db_url).load_settings("alice-browser") == {"x_model": "digits-mlp", "x_amount": 0.3}
    s.save_settings("alice-browser", {"x_amount": 0.4})  # an update of an existing row
    s.flush()
    assert store.Store(db_url).load_settings("alice-browser") == {"x_amount": 0.4}
    assert s.load_settings("nobody-here") is None


def test_corrupt_database_is_one_line_and_the_store_still_works(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not a database" * 200)
    s = store.Store(url(bad))
    assert s.problem and "damaged" in s.problem and "\n" not in s.problem and not s.persistent
    assert s.save_experiment("alice-browser", row(1)) and s.experiments("alice-browser")  # in memory
    assert bad.read_bytes().startswith(b"this is not")  # left as it was


def test_newer_schema_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "new.db"
    store.Store(url(path)).close()
    with sqlite3.connect(path) as c:
        c.execute("UPDATE schema_version SET version = 99")
    s = store.Store(url(path))
    assert s.problem and "schema version 99" in s.problem and not s.persistent
    with sqlite3.connect(path) as c:
        assert c.execute("SELECT version FROM schema_version").fetchone()[0] == 99


def test_a_locked_database_gives_one_line_and_nothing_breaks(tmp_path):
    path = tmp_path / "h.db"
    s = store.Store(url(path), busy_timeout_s=0.2)
    holder = sqlite3.connect(path, isolation_level=None, timeout=0)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        with pytest.raises(store.StoreError, match="busy") as e:
            s.save_experiment("alice-browser", row(1))
        assert "\n" not in str(e.value)
        assert s.experiments("alice-browser") == []  # reads still work in WAL mode
        opened = store.Store(url(path), busy_timeout_s=0.2)  # a server starting now: one line, memory
        assert opened.problem and "locked" in opened.problem
    finally:
        holder.rollback()
        holder.close()
    assert s.save_experiment("alice-browser", row(1))  # and once it is free, writes work again


def test_class_room_challenge_submissions_leaderboard_and_reset(db_url):
    s = store.Store(db_url)
    with pytest.raises(store.StoreError, match="no challenge"):
        s.submit("alice-browser", "Ann", {"accuracy": 0.9, "size_kb": 10})
    s.set_challenge({"kind": "max_size", "model": "digits-cnn", "metric": "accuracy", "limit": 20})
    assert store.challenge_text(s.challenge()) == "best accuracy under 20 KB on digits-cnn"
    s.submit("alice-browser", "Ann", {"accuracy": 0.95, "size_kb": 18})
    s.submit("bob-browser-1", "Bob", {"accuracy": 0.99, "size_kb": 40})  # over the budget
    s.submit("bob-browser-1", "Bobby", {"accuracy": 0.96, "size_kb": 19.5})
    s.submit("carol-browser", "Carol", {"accuracy": 0.95, "size_kb": 12})
    with pytest.raises(store.StoreError, match="display name"):
        s.submit("dave-browser", "  \n ", {"accuracy": 0.5, "size_kb": 1})
    board = store.leaderboard(s.challenge(), s.submissions())
    assert [(b["display_name"], b["rank"]) for b in board] == [("Bobby", 1), ("Carol", 2), ("Ann", 3)]
    s.set_challenge({"kind": "min_metric", "model": "digits-cnn", "metric": "accuracy", "limit": 95})
    assert s.submissions() == []  # a new challenge starts an empty board
    s.submit("alice-browser", "Ann", {"accuracy": 0.951, "size_kb": 18})
    s.submit("carol-browser", "Carol", {"accuracy": 0.94, "size_kb": 5})
    board = store.leaderboard(s.challenge(), s.submissions())
    assert [(b["display_name"], b["rank"], b["qualifies"]) for b in board] == [("Ann", 1, True),
                                                                               ("Carol", None, False)]
    assert s.reset_class() == 6 and s.submissions() == []  # every revision's submissions of the room


def test_passcode_backoff_is_per_client_shared_by_processes_and_doubles(db_url):
    """The passcode's pause lives in the database, keyed by client address: another server process (or a new
    session in this one) sees it; another address does not; each try after the pause doubles it; the right passcode
    clears it."""
    a, b = store.Store(db_url), store.Store(db_url)  # two server processes on one database
    me, other = store.client_key("10.0.0.5"), store.client_key("10.0.0.6")
    for _ in range(store.MAX_TRIES - 1):
        assert a.passcode_attempt(me) == 0 and a.passcode_wait(me) == 0
    assert b.passcode_attempt(me) == 0  # the MAX_TRIES-th try is checked, and pauses the next one
    assert store.PAUSE_S - 5 < a.passcode_wait(me) <= store.PAUSE_S
    assert a.passcode_attempt(me) > 0 and b.passcode_attempt(me) > 0  # refused, in either process
    assert b.passcode_wait(other) == 0 and b.passcode_attempt(other) == 0
    with a._write() as c:  # the pause is over
        c.execute(store.database.update(store.schema.logins).values(until=0.0))
    assert a.passcode_attempt(me) == 0  # one more try; the next pause is twice as long
    assert 2 * store.PAUSE_S - 5 < b.passcode_wait(me) <= 2 * store.PAUSE_S
    a.passcode_ok(me)
    assert a.passcode_wait(me) == 0 and b.passcode_attempt(me) == 0


def test_servers_opening_a_new_database_at_once_all_keep_history_there(db_url):
    """Several server processes started together on one empty database (a workshop behind a proxy): each creates the
    tables if missing, and none fails (Postgres's CREATE TABLE is not safe against a concurrent one: the loser got an
    IntegrityError and kept its history in memory, so a reload on it lost the student's settings); the schema version
    is written once."""
    import threading

    from sqlalchemy import create_engine, text

    go = threading.Barrier(6)
    opened: list = []

    def open_store() -> None:
        go.wait()
        opened.append(store.Store(db_url))

    threads = [threading.Thread(target=open_store) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [(s.problem, s.persistent) for s in opened] == [(None, True)] * 6
    opened[0].save_settings("b1", {"x_amount": 0.5})
    opened[0].flush()
    assert all(s.load_settings("b1") == {"x_amount": 0.5} for s in opened)
    engine = create_engine(db_url)
    with engine.connect() as c:
        assert c.execute(text("SELECT count(*) FROM schema_version")).scalar() == 1
    engine.dispose()
    for s in opened:
        s.engine.dispose()


def test_parallel_passcode_tries_cannot_slip_past_the_count(db_url):
    """Many tabs guessing at the same moment: each try is counted before it is checked, so exactly MAX_TRIES get
    through before the pause, whatever the interleaving (row lock on Postgres, BEGIN IMMEDIATE on SQLite)."""
    import threading

    stores = [store.Store(db_url) for _ in range(2)]
    client = store.client_key("192.0.2.7")
    results: list[float] = []
    go = threading.Barrier(12)

    def guess(i: int) -> None:
        go.wait()
        results.append(stores[i % 2].passcode_attempt(client))

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(1 for r in results if r == 0) == store.MAX_TRIES and len(results) == 12


def test_teacher_link_works_once_in_any_process_and_is_stored_hashed(db_url):
    import threading

    a, b = store.Store(db_url), store.Store(db_url)
    token = a.new_teacher_link()
    assert len(token) >= 43 and not a.is_teacher("k-teacher") and not b.redeem_teacher_link("x" * 43, "k-student")
    won: list[bool] = []
    go = threading.Barrier(2)

    def redeem(s, who) -> None:
        go.wait()
        won.append(s.redeem_teacher_link(token, who))

    threads = [threading.Thread(target=redeem, args=(a, "k-teacher")), threading.Thread(target=redeem,
                                                                                       args=(b, "k-student"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won) == [False, True]  # exactly one browser got it
    assert a.is_teacher("k-teacher") != a.is_teacher("k-student")
    assert not a.redeem_teacher_link(token, "k-other")  # spent
    with a.engine.connect() as c:
        assert token not in str(c.exec_driver_sql("SELECT * FROM teacher_links").all())
    old = b.new_teacher_link()
    with b._write() as c:  # an unused link from a server started long ago
        c.execute(store.database.update(store.schema.teacher_links).values(created=0.0))
    assert not b.redeem_teacher_link(old, "k-late")
    b.grant_teacher("k-pass", "passcode")
    assert a.is_teacher("k-pass")
    a.revoke_teacher("k-pass")
    assert not b.is_teacher("k-pass")


def test_entry_size_and_passcode_check():
    r = {"size_bytes": 40960, "sparse_KB": 12.5, "theoretical_KB": 5.0, "simulated": False}
    assert store.entry_size_kb(r) == 12.5
    assert store.entry_size_kb({**r, "simulated": True}) is None
    assert store.entry_size_kb({**r, "simulated": True}, count_simulated=True) == 5.0
    assert store.check_code("s3cret", "s3cret") and not store.check_code("s3cre", "s3cret")
    assert not store.check_code("", "") and not store.check_code("x", None)
    assert store.check_code("ünï", "ünï")
    assert store.teacher_code(["--teacher-code", "abc"]) == "abc"


def test_database_url_option(tmp_path, monkeypatch):
    monkeypatch.delenv("COMPRESSION_LAB_DB", raising=False)
    assert store.database_url([]) == f"sqlite:///{store.DEFAULT_PATH}"
    assert store.database_url(["--db", str(tmp_path / "x.db")]) == f"sqlite:///{tmp_path / 'x.db'}"
    monkeypatch.setenv("COMPRESSION_LAB_DB", "sqlite:///" + str(tmp_path / "y.db"))
    s = store.Store(store.database_url([]))
    assert s.problem is None and (tmp_path / "y.db").exists()
    pg = store.Store("postgresql+psycopg://teacher:hunter2@127.0.0.1:1/lab")  # no driver or no server: one line
    assert pg.problem and "hunter2" not in pg.problem and "\n" not in pg.problem and not pg.persistent


WRITER = r"""
import sys, threading
sys.path.insert(0, sys.argv[2])
import store
s = store.Store(sys.argv[1])
assert s.persistent, s.problem
print("ready", flush=True)
lock = threading.Lock()
def work(t):
    i = 0
    while i < store.MAX_ROWS:  # beyond it the oldest rows are dropped by design (history is capped per browser)
        i += 1
        rid = s.save_experiment(f"browser-{t:04d}", {"key": f"k{i}", "model": "digits-cnn", "label": "x" * 200,
                                                      "accuracy": 0.5, "size_bytes": i, "recipe": {"i": i}}, "saved")
        s.save_settings(f"browser-{t:04d}", {"x_amount": i})
        with lock:
            print(t, i, rid, flush=True)  # printed only after the commit returned
for t in range(3):
    threading.Thread(target=work, args=(t,), daemon=True).start()
threading.Event().wait()
"""


@pytest.mark.parametrize("delay", [0.3, 1.0])
def test_kill_9_while_saving_keeps_every_saved_row(db_url, delay):
    """Three threads of a server process save rows; the process is killed with SIGKILL mid-write. After a restart
    every row whose save returned is there (and, on SQLite, ``PRAGMA integrity_check`` says ok)."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, db_url, str(ROOT / "dashboard")],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    saved = [line.split() for line in proc.stdout.read().splitlines() if line.strip()]
    saved = [(int(t), int(i), int(rid)) for t, i, rid in (x for x in saved if len(x) == 3)]
    assert len(saved) >= 3, "the writer saved too little to test anything"
    s = store.Store(db_url)
    assert s.problem is None and s.integrity() == "ok"
    if db_url.startswith("sqlite:///"):
        with sqlite3.connect(db_url[len("sqlite:///"):]) as c:
            assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    for t in range(3):
        ids = {r["id"] for r in s.experiments(f"browser-{t:04d}")}
        missing = [rid for tt, _, rid in saved if tt == t and rid not in ids]
        assert not missing, f"rows saved before the kill are gone: {missing[:5]}"
