"""``Store``: experiments, settings and the class room in one database, and ``get_store()``, the server's one store
(see the package docstring for where it lives and how it fails)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import secrets
import threading
import time
from pathlib import Path

from sqlalchemy import create_engine, delete, event, func, insert, select, update
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from .schema import (FORGET_S, LINK_S, MAX_PAUSE_S, MAX_ROWS, MAX_TRIES, PAUSE_S, ROOM, SCHEMA_VERSION, TEACHER_S,
                     StoreError, _json, _label, _line, challenges, clean_name, database_url, experiments, logins,
                     metadata, schema_version, settings, submissions, teacher_links, teachers)



def _stored(text: str) -> dict:
    """A row's stored JSON, or {} when it cannot be read (a damaged row never breaks a page)."""
    try:
        return json.loads(text)
    except ValueError:
        return {}

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
            if self.engine.dialect.name == "postgresql":
                # servers started together on one fresh database: Postgres's CREATE TABLE is not safe against a
                # concurrent one (the loser fails on a unique index of its catalogue and would keep history in
                # memory); one at a time, until this transaction ends (SQLite: BEGIN IMMEDIATE does the same)
                c.exec_driver_sql("SELECT pg_advisory_xact_lock(7212301)")
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
            return [{**_stored(r.data), "id": r.id, "name": r.name, "how": r.how, "created": r.created} for r in rows]

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
            return [{**_stored(r.data), "id": r.id, "browser": r.browser, "display_name": r.display_name,
                     "created": r.created, "accuracy": r.accuracy, "size_kb": r.size_kb} for r in rows]

        return self._run("reading the leaderboard", go)

    def reset_class(self, room: str = ROOM) -> int:
        """Remove every submission of the room (the challenge stays). Returns how many were removed."""
        def go() -> int:
            with self._write() as c:
                return c.execute(delete(submissions).where(submissions.c.room == room)).rowcount

        return self._run("resetting the class", go)

    # ------------------------------------------------------------------ the teacher's rights
    def _insert_missing(self, table, **values) -> None:
        """Insert a row unless its primary key is there already (another process may insert it at the same time)."""
        pk = list(table.primary_key.columns)[0]
        try:
            with self._write() as c:
                if c.execute(select(pk).where(pk == values[pk.name])).first() is None:
                    c.execute(insert(table).values(**values))
        except IntegrityError:  # inserted by someone else in between: it exists, which is all we wanted
            pass

    def passcode_wait(self, client: str) -> float:
        """Seconds before ``client`` (``identity.client_key``) may try the teacher passcode again; 0: now."""
        def go():
            with self.engine.connect() as c:
                return c.execute(select(logins.c.until).where(logins.c.client == client)).scalar()

        return max(0.0, float(self._run("reading the passcode pause", go) or 0.0) - time.time())

    def passcode_attempt(self, client: str) -> float:
        """Count one passcode try of ``client`` BEFORE it is checked (parallel tries from many tabs cannot slip past
        the count); returns 0.0 when this try may be checked, else the seconds left in the pause (the try is refused
        and not counted). From the MAX_TRIES-th try on, each try pauses the next: PAUSE_S, twice as long after each
        further one (MAX_PAUSE_S at most). ``passcode_ok`` clears the count; FORGET_S after its last try a client
        starts afresh. Kept in the database: a reload, a new tab, a new browser session or another server process
        sees the same count."""
        def go() -> float:
            now = time.time()
            self._insert_missing(logins, client=client, failures=0, until=0.0, updated=now)
            with self._write() as c:  # SQLite: BEGIN IMMEDIATE; Postgres: the row lock below
                r = c.execute(select(logins).where(logins.c.client == client).with_for_update()).first()
                if r.until > now:
                    return float(r.until - now)
                failures = (0 if now - r.updated > FORGET_S else int(r.failures)) + 1
                until = now + min(MAX_PAUSE_S, PAUSE_S * 2 ** (failures - MAX_TRIES)) if failures >= MAX_TRIES else 0.0
                c.execute(update(logins).where(logins.c.client == client)
                          .values(failures=failures, until=until, updated=now))
                return 0.0

        return self._run("checking the passcode pause", go)

    def passcode_ok(self, client: str) -> None:
        """The right passcode: ``client`` starts afresh."""
        def go() -> None:
            with self._write() as c:
                c.execute(delete(logins).where(logins.c.client == client))

        self._run("clearing the passcode pause", go)

    def grant_teacher(self, browser: str, how: str, seconds: float = TEACHER_S) -> None:
        """Give ``browser`` (``identity.browser_key``) teacher rights for ``seconds`` (``how``: passcode | link)."""
        def go() -> None:
            now = time.time()
            with self._write() as c:
                c.execute(delete(teachers).where(teachers.c.browser == browser))
                c.execute(insert(teachers).values(browser=browser, granted=now, until=now + seconds, how=how[:16]))

        self._run("granting teacher rights", go)

    def is_teacher(self, browser: str) -> bool:
        def go():
            with self.engine.connect() as c:
                return c.execute(select(teachers.c.until).where(teachers.c.browser == browser)).scalar()

        return float(self._run("reading teacher rights", go) or 0.0) > time.time()

    def revoke_teacher(self, browser: str) -> None:
        def go() -> None:
            with self._write() as c:
                c.execute(delete(teachers).where(teachers.c.browser == browser))

        self._run("leaving teacher mode", go)

    @staticmethod
    def _token_hash(token: str) -> str:
        return hashlib.sha256(("compression-lab-teacher-link:" + token).encode("utf-8")).hexdigest()

    def new_teacher_link(self) -> str:
        """A new one-time teacher token (256 bits); only its SHA-256 is stored. Expired links are dropped."""
        token = secrets.token_urlsafe(32)

        def go() -> None:
            now = time.time()
            with self._write() as c:
                c.execute(delete(teacher_links).where(teacher_links.c.created < now - LINK_S))
                c.execute(insert(teacher_links).values(token_hash=self._token_hash(token), created=now, used=None))

        self._run("making a teacher link", go)
        return token

    def redeem_teacher_link(self, token: str, browser: str) -> bool:
        """Spend a one-time teacher token on ``browser``: True (teacher rights granted) only for an unused token
        younger than LINK_S; the same token never works twice, even in two processes at once."""
        if not isinstance(token, str) or not 20 <= len(token) <= 128:
            return False

        def go() -> bool:
            now = time.time()
            with self._write() as c:
                spent = c.execute(update(teacher_links).where(
                    teacher_links.c.token_hash == self._token_hash(token), teacher_links.c.used.is_(None),
                    teacher_links.c.created >= now - LINK_S).values(used=now)).rowcount
                if spent != 1:
                    return False
                c.execute(delete(teachers).where(teachers.c.browser == browser))
                c.execute(insert(teachers).values(browser=browser, granted=now, until=now + TEACHER_S, how="link"))
                return True

        return self._run("opening the teacher link", go)


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
