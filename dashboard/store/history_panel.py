"""The Experiments page's history controls (Streamlit): rename, delete, delete all, CSV/JSON export, where it is
kept."""

from __future__ import annotations

from .database import get_store
from .schema import MAX_NAME, StoreError, _label, clean_name
from .session import browser_id, identity_kept


def history_tools(rows: list[dict]) -> None:
    """The Experiments page's history controls: rename, delete, delete all, CSV/JSON export, where it is kept."""
    import streamlit as st

    db = get_store()
    bid = browser_id()
    st.subheader("Your history")
    try:  # where the database lives is the server's business: only the teacher sees its path
        teacher = db.is_teacher(bid)
    except StoreError:
        teacher = False
    where = db.where if teacher or not db.persistent else "this server's database"
    if identity_kept():
        kept_for = (f"Kept in {where} for this browser: a reload or a server restart finds it again (the key is a "
                    "secret cookie this server gave your browser; no address or name opens it, and clearing this "
                    "site's cookies starts a new, empty history).")
    else:
        kept_for = (f"Kept in {where} for this session only: this page came without the server's identity cookie "
                    "(a server started with `streamlit run dashboard/app.py` instead of `dashboard/server.py`, or "
                    "cookies blocked), so a reload starts a new history.")
    st.caption(kept_for + " Rows are added by 'Save to history' on the Explore page and by every training run, "
               "recipe import and latency timing; moving a slider only changes the current row.")
    if db.problem:  # the line names the database file: a student reads "on the server" instead
        st.warning(db.problem if teacher else db.problem.replace(_label(db.url), "on the server"))
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
