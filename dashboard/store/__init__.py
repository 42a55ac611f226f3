"""History that lasts: experiments, settings and the class room in a database (SQLite by default, any SQLAlchemy URL).

- **Where**: ``compression-lab.sqlite3`` next to the server (the repository root; an installed dashboard: the folder
  it was started from), or ``--db URL_OR_PATH`` after ``--`` on ``streamlit run dashboard/server.py -- --db ...`` (or
  COMPRESSION_LAB_DB). SQLite runs in WAL mode with ``synchronous=FULL``; every write is one transaction
  (``BEGIN IMMEDIATE``, so writers from several server processes wait for each other up to the busy timeout instead
  of failing). Several dashboard processes on ONE machine can share the SQLite file; replicas on several machines (or
  a database on a network share) need a server database: ``--db postgresql+psycopg://user:pass@host/db`` (install a
  driver: ``pip install "psycopg[binary]"``).
- **Who**: rows are keyed by a hash of each browser's identity cookie: a server-issued secret (256 bits) in an
  HttpOnly cookie set by ``dashboard/server.py`` (``identity.py``), so a reload (F5), a dropped Wi-Fi or a server
  restart finds the same history and settings, and nothing a student can see (URL, name, leaderboard, export) opens
  anyone else's. Rows stored under the old ``?u=`` URL ids stay in the database, unreachable from a browser.
- **Teacher**: rights come from the passcode (with a backoff per client address kept in the database: ``logins``) or
  from the one-time link the server prints at start (``teacher_links``, hashed); granted rights are a row in
  ``teachers`` (12 hours).
- **What**: experiments a student saved ("Save to history") or applied (training runs, imported recipes; never each
  slider tick), with rename, delete and CSV/JSON export; the current settings (the Explore page's widget values);
  the class room (the teacher's challenge and the students' submissions).
- **Versioned**: a ``schema_version`` table; a newer schema is refused, not rewritten.
- **When it breaks**: a corrupt, unreadable or locked database gives ONE line (``Store.problem``) and the store falls
  back to memory for this server run, so the dashboard keeps working; a write that finds the database busy raises
  ``StoreError`` with one line.

- ``schema.py``: the tables, limits, ``--db`` and row helpers
- ``database.py``: ``Store`` and ``get_store()``, the server's one store
- ``classroom.py``: the class room's rules (passcode, challenge text, leaderboard)
- ``identity.py``: the identity cookie (ASGI middleware), browser keys, client keys
- ``session.py``: Streamlit glue (browser key, client key, settings restored and remembered, history rows kept)
- ``history_panel.py``: the Experiments page's history controls

Only ``session.py`` and ``history_panel.py`` use streamlit, inside their functions.
"""

from .classroom import (CHALLENGE_KINDS, challenge_text, check_code, entry_size_kb, leaderboard, qualifies,
                        teacher_code)
from .database import Store, get_store
from .history_panel import history_tools
from .schema import (DEFAULT_PATH, MAX_NAME, MAX_ROWS, MAX_TRIES, PAUSE_S, QUERY_KEY, ROOM, SCHEMA_VERSION,
                     StoreError, clean_name, database_url, new_browser_id, valid_browser_id)
from .identity import COOKIE, IdentityCookie, browser_key, client_key, new_secret, valid_secret
from .session import (SETTING_KEYS, SETTING_PREFIXES, browser_id, client, current_settings, identity_kept, keep,
                      load_history, persist_settings, restore_session, sync_session)

__all__ = [
    "CHALLENGE_KINDS", "COOKIE", "DEFAULT_PATH", "MAX_NAME", "MAX_ROWS", "MAX_TRIES", "PAUSE_S", "QUERY_KEY",
    "ROOM", "SCHEMA_VERSION", "SETTING_KEYS", "SETTING_PREFIXES", "browser_id", "browser_key", "challenge_text",
    "check_code", "clean_name", "client", "client_key", "current_settings", "database_url", "entry_size_kb",
    "get_store", "history_tools", "identity_kept", "IdentityCookie", "keep", "leaderboard", "load_history",
    "new_browser_id", "new_secret", "persist_settings", "qualifies", "restore_session", "Store", "StoreError",
    "sync_session", "teacher_code", "valid_browser_id", "valid_secret",
]
