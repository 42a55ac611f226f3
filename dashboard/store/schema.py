"""The history database's tables (schema version 1), its limits, where it lives (``--db``) and the row helpers
(JSON that never holds NaN, printable names, browser keys)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text
from sqlalchemy.engine import make_url

from .identity import browser_key, new_secret

try:  # the dashboard imports this package as ``store`` (dashboard/ on sys.path) or as ``dashboard.store``
    from jobs import server_flag
except ImportError:  # pragma: no cover
    from dashboard.jobs import server_flag

ROOT = Path(__file__).resolve().parents[2]  # the repository, when the dashboard runs from a checkout
# the default database: in the repository (a checkout), else in the folder the server was started from (installed)
DEFAULT_PATH = (ROOT if (ROOT / "pyproject.toml").is_file() else Path.cwd()) / "compression-lab.sqlite3"
SCHEMA_VERSION = 1
ROOM = "class"  # one class room per server
QUERY_KEY = "u"  # the URL query parameter that carried the browser id before the identity cookie (now ignored)
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
MAX_ROWS = 500  # experiments kept per browser
MAX_NAME = 120
# the teacher passcode's backoff, per client address: MAX_TRIES free tries, then each try pauses the next one, PAUSE_S
# and twice as long after each further wrong one (MAX_PAUSE_S at most); FORGET_S after its last try a client starts
# afresh. Teacher rights (passcode or one-time link) last TEACHER_S; an unused teacher link lasts LINK_S.
MAX_TRIES = 5
PAUSE_S = 60.0
MAX_PAUSE_S = 3600.0
FORGET_S = 24 * 3600.0
TEACHER_S = 12 * 3600.0
LINK_S = 12 * 3600.0

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

# the teacher's rights (added to version 1 databases by create_all: new tables only, nothing else changes)
logins = Table(  # the passcode backoff, per client address (``identity.client_key``), shared by every process
    "logins", metadata,
    Column("client", String(128), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("until", Float, nullable=False),  # no passcode is checked for this client before this time
    Column("updated", Float, nullable=False),
)
teachers = Table(  # browsers (``identity.browser_key``) with teacher rights, and until when
    "teachers", metadata,
    Column("browser", String(64), primary_key=True),
    Column("granted", Float, nullable=False),
    Column("until", Float, nullable=False),
    Column("how", String(16), nullable=False),  # "passcode" | "link"
)
teacher_links = Table(  # one-time teacher links printed on the server's console: SHA-256 of the token only
    "teacher_links", metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("created", Float, nullable=False),
    Column("used", Float, nullable=True),
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
    """A random browser key (what a session without an identity cookie is keyed by)."""
    return browser_key(new_secret())
