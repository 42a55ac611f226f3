"""History that lasts: experiments, settings and the class room in a database (SQLite by default, any SQLAlchemy URL).

- **Where**: ``compression-lab.sqlite3`` next to the server (the repository root; an installed dashboard: the folder
  it was started from), or ``--db URL_OR_PATH`` after ``--`` on ``streamlit run dashboard/app.py -- --db ...`` (or
  COMPRESSION_LAB_DB). SQLite runs in WAL mode with ``synchronous=FULL``; every write is one transaction
  (``BEGIN IMMEDIATE``, so writers from several server processes wait for each other up to the busy timeout instead
  of failing). Several dashboard processes on ONE machine can share the SQLite file; replicas on several machines (or
  a database on a network share) need a server database: ``--db postgresql+psycopg://user:pass@host/db`` (install a
  driver: ``pip install "psycopg[binary]"``).
- **Who**: rows are keyed by a per-browser id kept in the page URL (``?u=...``), so a reload (F5), a dropped Wi-Fi or
  a server restart finds the same history and settings. The id is the only key: a copied URL shares its history.
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
- ``session.py``: Streamlit glue (browser id, settings restored and remembered, history rows kept)
- ``history_panel.py``: the Experiments page's history controls

Only ``session.py`` and ``history_panel.py`` use streamlit, inside their functions.
"""

from .classroom import (CHALLENGE_KINDS, challenge_text, check_code, entry_size_kb, leaderboard, qualifies,
                        teacher_code)
from .database import Store, get_store
from .history_panel import history_tools
from .schema import (DEFAULT_PATH, MAX_NAME, MAX_ROWS, QUERY_KEY, ROOM, SCHEMA_VERSION, StoreError, clean_name,
                     database_url, new_browser_id, valid_browser_id)
from .session import (SETTING_KEYS, SETTING_PREFIXES, browser_id, current_settings, keep, load_history,
                      persist_settings, restore_session, sync_session)

__all__ = [
    "CHALLENGE_KINDS", "DEFAULT_PATH", "MAX_NAME", "MAX_ROWS", "QUERY_KEY", "ROOM", "SCHEMA_VERSION", "SETTING_KEYS",
    "SETTING_PREFIXES", "Store", "StoreError", "browser_id", "challenge_text", "check_code", "clean_name",
    "current_settings", "database_url", "entry_size_kb", "get_store", "history_tools", "keep", "leaderboard",
    "load_history", "new_browser_id", "persist_settings", "qualifies", "restore_session", "sync_session",
    "teacher_code", "valid_browser_id",
]
