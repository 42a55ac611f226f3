"""Streamlit glue: this browser's key (from its HttpOnly identity cookie), its settings restored before the page and
remembered after it, and its history rows kept (``keep``) in the store."""

from __future__ import annotations

import json
import math
from typing import Any

from .database import get_store
from .identity import COOKIE, browser_key, client_key, new_secret, valid_secret
from .schema import QUERY_KEY, StoreError, _json

SETTING_PREFIXES = ("x_",)  # the Explore page's widget keys
SETTING_KEYS = ("c_name",)  # the display name on the Class page


def browser_id() -> str:
    """This browser's key: the hash of its identity cookie (set HttpOnly by ``dashboard/server.py``'s middleware, read
    here from the WebSocket handshake). Without one (AppTest, ``streamlit run dashboard/app.py``, a client that sent
    no cookie) a random key for this session only. A ``?u=`` in the address (the old URL id) is ignored and removed:
    nothing in a URL says who anyone is."""
    import streamlit as st

    ss = st.session_state
    bid = ss.get("_browser_id")
    if bid is None:
        try:
            secret = st.context.cookies.get(COOKIE)
        except Exception:  # no request context (bare mode)
            secret = None
        kept = valid_secret(secret)
        bid = browser_key(secret if kept else new_secret())
        ss["_browser_id"], ss["_browser_kept"] = bid, kept
    if QUERY_KEY in st.query_params:
        del st.query_params[QUERY_KEY]
    return bid


def identity_kept() -> bool:
    """Whether this session's identity lasts beyond it (an identity cookie came with the page)."""
    import streamlit as st

    browser_id()
    return bool(st.session_state.get("_browser_kept"))


def client() -> str:
    """This client's key for the passcode backoff: its address (``identity.client_key``), never the cookie, which a
    student can drop."""
    import streamlit as st

    try:
        address = st.context.ip_address
    except Exception:
        address = None
    return client_key(address if isinstance(address, str) else None)


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
