"""History that lasts: experiments, settings and the class room in a database (SQLite by default, any SQLAlchemy URL).

- **Where**: ``compression-lab.sqlite3`` next to the server (the repository root), or ``--db URL_OR_PATH`` after
  ``--`` on ``streamlit run dashboard/app.py -- --db ...`` (or COMPRESSION_LAB_DB). SQLite runs in WAL mode with
  ``synchronous=FULL``; every write is one transaction (``BEGIN IMMEDIATE``, so writers from several server processes
  wait for each other up to the busy timeout instead of failing). Several dashboard processes on ONE machine can share
  the SQLite file; replicas on several machines (or a database on a network share) need a server database:
  ``--db postgresql+psycopg://user:pass@host/db`` (install a driver: ``pip install "psycopg[binary]"``).
- **Who**: rows are keyed by a per-browser id kept in the page URL (``?u=...``), so a reload (F5), a dropped Wi-Fi or
  a server restart finds the same history and settings. The id is the only key: a copied URL shares its history.
- **What**: experiments a student saved ("Save to history") or applied (training runs, imported recipes; never each
  slider tick), with rename, delete and CSV/JSON export; the current settings (the Explore page's widget values);
  the class room (the teacher's challenge and the students' submissions).
- **Versioned**: a ``schema_version`` table; a newer schema is refused, not rewritten.
- **When it breaks**: a corrupt, unreadable or locked database gives ONE line (``Store.problem``) and the store falls
  back to memory for this server run, so the dashboard keeps working; a write that finds the database busy raises
  ``StoreError`` with one line.

This module imports streamlit only inside the few helpers that need a session (``browser_id``, ``restore_session``,
``persist_settings``).
"""

from __future__ import annotations

import csv
import hmac
import io
import json
import math
import re
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import StaticPool

try:  # the dashboard imports this module as ``store`` (dashboard/ on sys.path) or as ``dashboard.store``
    from jobs import server_flag
except ImportError:  # pragma: no cover
    from dashboard.jobs import server_flag

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PATH = ROOT / "compression-lab.sqlite3"
SCHEMA_VERSION = 1
ROOM = "class"  # one class room per server
QUERY_KEY = "u"  # the URL query parameter that carries the browser id
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
MAX_ROWS = 500  # experiments kept per browser
MAX_NAME = 120

metadata = MetaData()
schema_version = Table("schema_version", metadata, Column("version", Integer, nullable=False))
experiments = Table(
    "experiments", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("browser", String(64), nullable=False, index=True),
    Column("created", Float, nullable=False),
    Column("name", String(MAX_NAME), nullable=False),
    Column("model", String(300), nullable=False, default=""),
    Column("how", String(16), nullable=False),  # "saved" | "applied"
    Column("key", Text, nullable=False),  # the recipe key: one row per configuration and browser
    Column("data", Text, nullable=False),  # the row as JSON
)
settings = Table(
    "settings", metadata,
    Column("browser", String(64), primary_key=True),
    Column("updated", Float, nullable=False),
    Column("data", Text, nullable=False),
)
challenges = Table(
    "challenges", metadata,
    Column("room", String(64), primary_key=True),
    Column("revision", Integer, nullable=False),
    Column("updated", Float, nullable=False),
    Column("data", Text, nullable=False),
)
submissions = Table(
    "submissions", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("room", String(64), nullable=False, index=True),
    Column("revision", Integer, nullable=False),
    Column("browser", String(64), nullable=False),
    Column("display_name", String(60), nullable=False),
    Column("created", Float, nullable=False),
    Column("accuracy", Float, nullable=False),
    Column("size_kb", Float, nullable=False),
    Column("data", Text, nullable=False),
)


class StoreError(Exception):
    """A database problem, as one line for the page."""


# ----------------------------------------------------------------------------------------------- helpers
def database_url(argv: list[str] | None = None) -> str:
    """The database URL from ``--db`` / COMPRESSION_LAB_DB (a URL, or a file path for SQLite), else the default
    SQLite file next to the server."""
    value = server_flag("--db", "COMPRESSION_LAB_DB", None, str, argv)
    if not value:
        return f"sqlite:///{DEFAULT_PATH}"
    if "://" not in value:
        return f"sqlite:///{Path(value).expanduser().resolve()}"
    return value


def _label(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unreadable database URL)"


def _line(e: BaseException) -> str:
    text = " ".join(str(getattr(e, "orig", None) or e).split())
    return text[:200] or type(e).__name__


def _json(data: Any) -> str:
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple, set)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(data), default=str, separators=(",", ":"))


def clean_name(name: Any, limit: int = MAX_NAME) -> str:
    """A display name or label: printable, one line, trimmed."""
    text = "".join(ch if ch.isprintable() else " " for ch in str(name)).strip()
    return " ".join(text.split())[:limit]


def valid_browser_id(value: Any) -> bool:
    return isinstance(value, str) and bool(_ID_RE.match(value))


def new_browser_id() -> str:
    return secrets.token_urlsafe(12)


# ----------------------------------------------------------------------------------------------- the store
class Store:
    """Experiments, settings and the class room in one database (see the module docstring)."""

    def __init__(self, url: str | None = None, busy_timeout_s: float = 5.0, settings_delay_s: float = 0.3) -> None:
        self.url = url or database_url()
        self.busy_timeout_s = busy_timeout_s
        self.settings_delay_s = settings_delay_s
        self.problem: str | None = None
        self.persistent = True
        self._pending: dict[str, str] = {}
        self._pending_lock = threading.Lock()
        self._flush_event = threading.Event()
        self._writer: threading.Thread | None = None
        try:
            self.engine = self._engine(self.url)
            self._setup()
        except Exception as e:  # corrupt, unreadable, locked, newer schema, no driver: one line, keep running
            self.problem = self._open_problem(e)
            self.persistent = False
            self.engine = self._engine("sqlite://")
            self._setup()

    def _open_problem(self, e: BaseException) -> str:
        where = _label(self.url)
        text = _line(e)
        if isinstance(e, StoreError):
            return str(e)
        if "not a database" in text or "malformed" in text or "corrupt" in text:
            return (f"history: the database {where} is damaged ({text}); history is kept in memory for this server "
                    "run only: move the file away (a new one is made) or start with `-- --db OTHER_FILE`")
        if "locked" in text or "busy" in text:
            return (f"history: the database {where} is locked by another program ({text}); history is kept in "
                    "memory for this server run only")
        if isinstance(e, ModuleNotFoundError) or "No module named" in text:
            return f"history: cannot open {where}: its database driver is not installed ({text})"
        return f"history: cannot open the database {where} ({type(e).__name__}: {text}); history is kept in memory"

    def _engine(self, url: str) -> Engine:
        u = make_url(url)
        if u.get_backend_name() != "sqlite":
            return create_engine(url, pool_pre_ping=True, future=True)
        memory = u.database in (None, "", ":memory:")
        if not memory:
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"timeout": self.busy_timeout_s, "check_same_thread": False},
            **({"poolclass": StaticPool} if memory else {}))

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:
            dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
            cur = dbapi_conn.cursor()
            if not memory:
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=FULL")
            cur.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn) -> None:  # writers take the write lock up front: waiting works, no upgrade deadlock
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")

        return engine

    def _setup(self) -> None:
        if self.engine.dialect.name == "sqlite":
            with self.engine.connect() as c:
                check = c.exec_driver_sql("PRAGMA quick_check").scalar()
                if check != "ok":
                    raise StoreError(f"history: the database {_label(self.url)} is damaged (quick_check: "
                                     f"{str(check)[:120]}); history is kept in memory for this server run only: "
                                     "move the file away or start with `-- --db OTHER_FILE`")
        with self._write() as c:
            metadata.create_all(c)
            found = c.execute(select(schema_version.c.version)).scalars().all()
            if not found:
                c.execute(insert(schema_version).values(version=SCHEMA_VERSION))
            elif max(found) > SCHEMA_VERSION:
                raise StoreError(f"history: the database {_label(self.url)} has schema version {max(found)}, newer "
                                 f"than this dashboard's {SCHEMA_VERSION}; it is left untouched and history is kept "
                                 "in memory (upgrade the dashboard or use another --db)")
            # versions below SCHEMA_VERSION would be migrated here, one step per version, in this transaction

    def _write(self):
        return self.engine.execution_options(write=True).begin()

    def _run(self, what: str, fn):
        """Run ``fn`` and turn database errors into one StoreError line."""
        try:
            return fn()
        except StoreError:
            raise
        except SQLAlchemyError as e:
            text = _line(e)
            if "locked" in text or "busy" in text:
                raise StoreError(f"history: the database is busy (another writer held it for over "
                                 f"{self.busy_timeout_s:g} s); {what} did not happen, try again") from None
            raise StoreError(f"history: {what} failed ({text})") from None

    @property
    def where(self) -> str:
        return _label(self.url) if self.persistent else "memory (this server run only)"

    def integrity(self) -> str:
        """``PRAGMA integrity_check`` (SQLite) or 'ok' for other databases."""
        if self.engine.dialect.name != "sqlite":
            return "ok"
        with self.engine.connect() as c:
            return str(c.exec_driver_sql("PRAGMA integrity_check").scalar())

    def close(self) -> None:
        self.flush()
        self.engine.dispose()

    # ------------------------------------------------------------------ experiments
    def save_experiment(self, browser: str, row: dict, how: str = "saved", name: str | None = None) -> int:
        """Store a history row (one per configuration and browser: saving it again updates it; a saved row stays
        saved). Returns its id."""
        if how not in ("saved", "applied"):
            raise ValueError("how must be 'saved' or 'applied'")
        key = str(row.get("key") or _json(row.get("recipe")))
        label = clean_name(name if name is not None else row.get("label") or "configuration") or "configuration"
        data = _json({k: v for k, v in row.items() if k not in ("id", "name", "how", "created")})

        def go() -> int:
            with self._write() as c:
                old = c.execute(select(experiments.c.id, experiments.c.how).where(
                    experiments.c.browser == browser, experiments.c.key == key)).first()
                if old is not None:
                    values = {"data": data}
                    if how == "saved" and old.how != "saved":
                        values["how"] = "saved"
                    c.execute(update(experiments).where(experiments.c.id == old.id).values(**values))
                    return int(old.id)
                new = c.execute(insert(experiments).values(
                    browser=browser, created=time.time(), name=label, model=str(row.get("model", ""))[:300],
                    how=how, key=key, data=data)).inserted_primary_key[0]
                count = c.execute(select(func.count()).select_from(experiments).where(
                    experiments.c.browser == browser)).scalar()
                if count > MAX_ROWS:  # keep the newest: drop the oldest applied rows first, then the oldest
                    extra = c.execute(select(experiments.c.id).where(experiments.c.browser == browser).order_by(
                        (experiments.c.how == "saved"), experiments.c.id).limit(count - MAX_ROWS)).scalars().all()
                    c.execute(delete(experiments).where(experiments.c.id.in_(extra)))
                return int(new)

        return self._run("saving the experiment", go)

    def experiments(self, browser: str) -> list[dict]:
        """This browser's rows, oldest first: the stored row plus id, name, how and created."""
        def go() -> list[dict]:
            with self.engine.connect() as c:
                rows = c.execute(select(experiments).where(experiments.c.browser == browser)
                                 .order_by(experiments.c.id)).all()
            out = []
            for r in rows:
                try:
                    data = json.loads(r.data)
                except ValueError:
                    data = {}
                out.append({**data, "id": r.id, "name": r.name, "how": r.how, "created": r.created})
            return out

        return self._run("reading the history", go)

    def rename(self, browser: str, exp_id: int, name: str) -> bool:
        name = clean_name(name)
        if not name:
            raise StoreError("history: a name needs at least one visible character")

        def go() -> bool:
            with self._write() as c:
                return c.execute(update(experiments).where(experiments.c.id == int(exp_id),
                                                           experiments.c.browser == browser)
                                 .values(name=name)).rowcount > 0

        return self._run("renaming", go)

    def delete(self, browser: str, exp_id: int) -> bool:
        def go() -> bool:
            with self._write() as c:
                return c.execute(delete(experiments).where(experiments.c.id == int(exp_id),
                                                           experiments.c.browser == browser)).rowcount > 0

        return self._run("deleting", go)

    def clear(self, browser: str, how: str | None = None) -> int:
        def go() -> int:
            cond = [experiments.c.browser == browser] + ([experiments.c.how == how] if how else [])
            with self._write() as c:
                return c.execute(delete(experiments).where(*cond)).rowcount

        return self._run("clearing the history", go)

    def export_json(self, browser: str) -> str:
        return json.dumps(self.experiments(browser), indent=2, default=str)

    def export_csv(self, browser: str) -> str:
        """One line per experiment: scalar fields as columns (first the ones people read), the recipe as JSON."""
        rows = self.experiments(browser)
        first = ["id", "name", "how", "created", "model", "label", "accuracy", "size_bytes", "sparse_KB",
                 "theoretical_KB", "best_KB", "latency_ms", "nonzero_params", "params", "simulated"]
        cols = [c for c in first if any(c in r for r in rows)]
        cols += sorted({k for r in rows for k, v in r.items() if k not in cols and k != "recipe"
                        and not isinstance(v, (dict, list))})
        cols.append("recipe")
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in rows:
            out = {k: r.get(k) for k in cols}
            out["created"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created"]))
            out["recipe"] = json.dumps(r.get("recipe"), sort_keys=True) if r.get("recipe") is not None else ""
            w.writerow(out)
        return buf.getvalue()

    # ------------------------------------------------------------------ settings
    def save_settings(self, browser: str, data: dict) -> None:
        """Remember the settings (written by a background thread within ``settings_delay_s``, coalesced)."""
        text = _json(data)
        with self._pending_lock:
            self._pending[browser] = text
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(target=self._write_settings_loop, name="compression-lab-settings",
                                                daemon=True)
                self._writer.start()
        self._flush_event.set()

    def load_settings(self, browser: str) -> dict | None:
        with self._pending_lock:
            text = self._pending.get(browser)
        if text is None:
            def go():
                with self.engine.connect() as c:
                    return c.execute(select(settings.c.data).where(settings.c.browser == browser)).scalar()

            text = self._run("reading the settings", go)
        if not text:
            return None
        try:
            data = json.loads(text)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def flush(self) -> None:
        """Write pending settings now."""
        with self._pending_lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return
        try:
            with self._write() as c:
                for browser, text in pending.items():
                    done = c.execute(update(settings).where(settings.c.browser == browser)
                                     .values(data=text, updated=time.time())).rowcount
                    if not done:
                        c.execute(insert(settings).values(browser=browser, data=text, updated=time.time()))
        except SQLAlchemyError as e:
            with self._pending_lock:  # keep them (newer ones win) and try again next round
                for k, v in pending.items():
                    self._pending.setdefault(k, v)
            self.problem = self.problem or f"history: settings not saved yet ({_line(e)}); retrying"

    def _write_settings_loop(self) -> None:
        while True:
            self._flush_event.wait()
            time.sleep(self.settings_delay_s)  # coalesce a burst of slider moves into one write
            self._flush_event.clear()
            self.flush()

    # ------------------------------------------------------------------ the class room
    def set_challenge(self, challenge: dict, room: str = ROOM) -> int:
        """Set (or replace) the room's challenge; returns its revision. Earlier submissions stay with their
        revision (the leaderboard shows the current one's)."""
        def go() -> int:
            with self._write() as c:
                rev = c.execute(select(challenges.c.revision).where(challenges.c.room == room)).scalar()
                new = (rev or 0) + 1
                data = _json({**challenge, "revision": new, "set_at": time.time()})
                if rev is None:
                    c.execute(insert(challenges).values(room=room, revision=new, updated=time.time(), data=data))
                else:
                    c.execute(update(challenges).where(challenges.c.room == room)
                              .values(revision=new, updated=time.time(), data=data))
                return new

        return self._run("setting the challenge", go)

    def challenge(self, room: str = ROOM) -> dict | None:
        def go():
            with self.engine.connect() as c:
                return c.execute(select(challenges.c.data).where(challenges.c.room == room)).scalar()

        text = self._run("reading the challenge", go)
        return json.loads(text) if text else None

    def submit(self, browser: str, display_name: str, entry: dict, room: str = ROOM) -> int:
        """Add a student's point to the current challenge (``entry``: accuracy 0..1, size_kb, label, model, ...)."""
        name = clean_name(display_name, 60)
        if not name:
            raise StoreError("class: choose a display name first (any name; no account needed)")

        def go() -> int:
            with self._write() as c:
                rev = c.execute(select(challenges.c.revision).where(challenges.c.room == room)).scalar()
                if rev is None:
                    raise StoreError("class: there is no challenge yet; the teacher sets one")
                return int(c.execute(insert(submissions).values(
                    room=room, revision=rev, browser=browser, display_name=name, created=time.time(),
                    accuracy=float(entry["accuracy"]), size_kb=float(entry["size_kb"]),
                    data=_json(entry))).inserted_primary_key[0])

        return self._run("submitting", go)

    def submissions(self, room: str = ROOM, revision: int | None = None) -> list[dict]:
        """The current challenge's submissions (or ``revision``'s), oldest first."""
        def go() -> list[dict]:
            with self.engine.connect() as c:
                rev = revision
                if rev is None:
                    rev = c.execute(select(challenges.c.revision).where(challenges.c.room == room)).scalar()
                if rev is None:
                    return []
                rows = c.execute(select(submissions).where(submissions.c.room == room,
                                                           submissions.c.revision == rev)
                                 .order_by(submissions.c.id)).all()
            out = []
            for r in rows:
                try:
                    data = json.loads(r.data)
                except ValueError:
                    data = {}
                out.append({**data, "id": r.id, "browser": r.browser, "display_name": r.display_name,
                            "created": r.created, "accuracy": r.accuracy, "size_kb": r.size_kb})
            return out

        return self._run("reading the leaderboard", go)

    def reset_class(self, room: str = ROOM) -> int:
        """Remove every submission of the room (the challenge stays). Returns how many were removed."""
        def go() -> int:
            with self._write() as c:
                return c.execute(delete(submissions).where(submissions.c.room == room)).rowcount

        return self._run("resetting the class", go)


_STORE: Store | None = None
_STORE_LOCK = threading.Lock()


def get_store() -> Store:
    """The server's one store (opened on first use from ``--db`` / COMPRESSION_LAB_DB / the default file)."""
    global _STORE
    with _STORE_LOCK:
        if _STORE is None:
            try:
                url = database_url()
            except Exception as e:  # a malformed --db value: one line, memory store
                url = "sqlite://"
                problem = f"history: --db: {e}"
            else:
                problem = None
            _STORE = Store(url)
            if problem:
                _STORE.problem = problem
            import atexit

            atexit.register(_STORE.flush)
        return _STORE


# ----------------------------------------------------------------------------------------------- the class room
def teacher_code(argv: list[str] | None = None) -> str | None:
    """The teacher's passcode from ``--teacher-code`` (after ``--``) or COMPRESSION_LAB_TEACHER_CODE; None: no teacher
    mode. Never logged or shown."""
    code = server_flag("--teacher-code", "COMPRESSION_LAB_TEACHER_CODE", None, str, argv)
    return code or None


def check_code(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison of a typed passcode with the configured one (False when either is missing)."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


CHALLENGE_KINDS = {
    "max_size": "best {metric} under {limit:g} KB",
    "min_metric": "smallest file with {metric} at least {limit:g} %",
}


def challenge_text(ch: dict) -> str:
    what = CHALLENGE_KINDS.get(ch.get("kind", "max_size"), CHALLENGE_KINDS["max_size"])
    return what.format(metric=ch.get("metric", "accuracy"), limit=float(ch.get("limit", 0))) + \
        f" on {ch.get('model', '?')}"


def entry_size_kb(row: dict, count_simulated: bool = False) -> float | None:
    """The size a history row competes with: its smallest real file (dense or sparse-encoded) in KB; a simulated
    (fake-quant) result counts with its theoretical size only when the challenge allows it, else None."""
    simulated = bool(row.get("simulated"))
    if simulated and not count_simulated:
        return None
    sizes = [row.get("size_bytes", 0) / 1024 if row.get("size_bytes") is not None else None, row.get("sparse_KB")]
    if simulated:
        sizes.append(row.get("theoretical_KB"))
    sizes = [float(s) for s in sizes if s is not None]
    return min(sizes) if sizes else None


def qualifies(ch: dict, accuracy: float, size_kb: float) -> bool:
    if ch.get("kind", "max_size") == "max_size":
        return size_kb <= float(ch["limit"]) + 1e-9
    return accuracy * 100 >= float(ch["limit"]) - 1e-9


def leaderboard(ch: dict | None, subs: list[dict]) -> list[dict]:
    """One line per student (browser): their best submission, ranked (1 = best) among those meeting the constraint;
    the others follow with rank None. "max_size": higher accuracy first (then smaller, then earlier);
    "min_metric": smaller size first (then higher accuracy, then earlier)."""
    if not ch:
        return []
    size_first = ch.get("kind", "max_size") == "min_metric"

    def order(s: dict) -> tuple:
        ok = qualifies(ch, s["accuracy"], s["size_kb"])
        main = (s["size_kb"], -s["accuracy"]) if size_first else (-s["accuracy"], s["size_kb"])
        return (not ok, *main, s["created"])

    best: dict[str, dict] = {}
    latest_name: dict[str, str] = {}
    for s in subs:
        latest_name[s["browser"]] = s["display_name"]
        if s["browser"] not in best or order(s) < order(best[s["browser"]]):
            best[s["browser"]] = s
    rows = sorted(best.values(), key=order)
    out, rank = [], 0
    for s in rows:
        ok = qualifies(ch, s["accuracy"], s["size_kb"])
        if ok:
            rank += 1
        out.append({**s, "display_name": latest_name[s["browser"]], "qualifies": ok, "rank": rank if ok else None})
    return out


# ----------------------------------------------------------------------------------------------- Streamlit glue
SETTING_PREFIXES = ("x_",)  # the Explore page's widget keys
SETTING_KEYS = ("c_name",)  # the display name on the Class page


def browser_id() -> str:
    """This browser's id: from the URL (``?u=...``), else a new one written into the URL so a reload keeps it."""
    import streamlit as st

    ss = st.session_state
    bid = ss.get("_browser_id")
    in_url = st.query_params.get(QUERY_KEY)
    if bid is None:
        bid = in_url if valid_browser_id(in_url) else new_browser_id()
        ss["_browser_id"] = bid
    if in_url != bid:
        st.query_params[QUERY_KEY] = bid
    return bid


def _settable(v: Any) -> bool:
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return True
    if isinstance(v, (int, float)):
        return math.isfinite(v)
    if isinstance(v, list):
        return all(isinstance(x, (str, int, float, bool)) for x in v)
    return False


def current_settings() -> dict:
    import streamlit as st

    return {k: v for k, v in st.session_state.items() if isinstance(k, str)
            and (k.startswith(SETTING_PREFIXES) or k in SETTING_KEYS) and _settable(v)}


def restore_session() -> str | None:
    """Once per browser session: put the saved settings back into ``st.session_state`` (before any widget is drawn)
    so a reload finds the same page. Returns the store's problem line, if any."""
    import streamlit as st

    s = get_store()
    bid = browser_id()
    if st.session_state.get("_restored") == bid:
        return s.problem
    st.session_state["_restored"] = bid
    try:
        saved = s.load_settings(bid) or {}
    except StoreError as e:
        return str(e)
    for k, v in saved.items():
        if isinstance(k, str) and (k.startswith(SETTING_PREFIXES) or k in SETTING_KEYS) and _settable(v) \
                and k not in st.session_state:
            st.session_state[k] = v
    st.session_state["_saved_settings"] = _json({**saved, **current_settings()})
    return s.problem


def persist_settings() -> None:
    """At the end of a run: remember the settings if they changed (coalesced, written off the page thread)."""
    import streamlit as st

    if "_browser_id" not in st.session_state:
        return
    try:
        last = json.loads(st.session_state.get("_saved_settings") or "{}")
        # merged: a page without the Explore widgets (its run does not see their keys) keeps their last values
        text = _json({**last, **current_settings()})
    except Exception:  # never let remembering settings break a page
        return
    if st.session_state.get("_saved_settings") == text:
        return
    st.session_state["_saved_settings"] = text
    get_store().save_settings(st.session_state["_browser_id"], json.loads(text))


# ----------------------------------------------------------------------------------------------- history glue
def load_history() -> list[dict]:
    """This browser's kept rows (saved and applied), oldest first; [] with a warning when the store fails."""
    import streamlit as st

    try:
        rows = get_store().experiments(browser_id())
    except StoreError as e:
        st.warning(str(e))
        return []
    for r in rows:
        r["label"] = r["name"]  # a renamed row shows its new name everywhere
    return rows


def keep(row: dict, how: str) -> dict:
    """Mark a history row ``how``: "preview" (the current configuration, this session only), "applied" or "saved"
    (written to the database; the row takes the database's id). A saved row stays saved."""
    persist_settings()  # the Explore page records its row on every run, fragment runs included: a good moment
    if row.get("how") == "saved" and how != "saved":
        how = "saved"
    row["how"] = how
    if how == "preview":
        return row
    try:
        row["id"] = get_store().save_experiment(browser_id(), row, how, name=row.get("name") or row.get("label"))
        row.setdefault("name", row.get("label"))
    except StoreError as e:
        import streamlit as st

        st.warning(str(e))
    return row


def history_tools(rows: list[dict]) -> None:
    """The Experiments page's history controls: rename, delete, delete all, CSV/JSON export, where it is kept."""
    import streamlit as st

    db = get_store()
    bid = browser_id()
    st.subheader("Your history")
    st.caption(f"Kept in {db.where} for this browser: a reload or a server restart finds it again (the `?{QUERY_KEY}=` "
               "part of the address is your key; bookmark it to come back). Rows are added by 'Save to history' on "
               "the Explore page and by every training run, recipe import and latency timing; moving a slider only "
               "changes the current row.")
    if db.problem:
        st.warning(db.problem)
    kept = [r for r in rows if r.get("how") in ("saved", "applied")]
    names = {r["id"]: f"row {r['id']}: {r.get('label', '')}"[:90] for r in kept}
    if kept:
        c1, c2, c3 = st.columns([2, 2, 1])
        pick = c1.selectbox("Row", list(names), format_func=names.get, key="e_pick")
        new = c2.text_input("New name", key="e_newname", max_chars=MAX_NAME)
        try:
            if c3.button("Rename", key="e_rename", disabled=not clean_name(new or "")):
                db.rename(bid, pick, new)
                for r in rows:
                    if r["id"] == pick:
                        r["name"] = r["label"] = clean_name(new)
                st.rerun()
            if c3.button("Delete", key="e_delete"):
                db.delete(bid, pick)
                rows[:] = [r for r in rows if r["id"] != pick]
                st.rerun()
        except StoreError as e:
            st.error(str(e))
    d1, d2, d3 = st.columns([1, 1, 2])
    try:
        d1.download_button("Download CSV", db.export_csv(bid), file_name="compression-lab-history.csv",
                           mime="text/csv", key="e_csv")
        d2.download_button("Download JSON", db.export_json(bid), file_name="compression-lab-history.json",
                           mime="application/json", key="e_json")
    except StoreError as e:
        d1.error(str(e))
    sure = d3.checkbox("Yes, delete my whole history", key="e_sure")
    if d3.button("Delete all", key="e_clear", disabled=not sure):
        try:
            db.clear(bid)
        except StoreError as e:
            st.error(str(e))
        rows.clear()
        st.rerun()


def sync_session() -> None:
    """Before the page, every run: restore this browser's settings on the session's first run (a reload). A store
    problem is one warning line. (``persist_settings`` runs after the page: only then does session state know every
    widget's key.)"""
    import streamlit as st

    try:
        problem = restore_session()
    except Exception as e:  # the dashboard runs without history rather than not at all
        problem = f"history: unavailable ({type(e).__name__}: {' '.join(str(e).split())[:200]})"
    if problem and not st.session_state.get("_store_warned"):
        st.session_state["_store_warned"] = True
        st.warning(problem)
