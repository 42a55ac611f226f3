"""Class: the teacher's challenge, the students' submissions on one live leaderboard and one accuracy-vs-size chart.

Teacher rights come from the server, never from the page: the passcode the server was started with (``-- --teacher-code
CODE`` or COMPRESSION_LAB_TEACHER_CODE, compared in constant time, never logged or stored), tried at most
``store.MAX_TRIES`` times per client address before each further try pauses the next (60 s, doubling; kept in the
database, so a reload, a new tab or a new browser session does not reset it); or the one-time teacher link
``dashboard/server.py`` prints on its console at start (``/classroom?teacher=TOKEN``), which no wrong passcode can
lock. Either grants this browser (its identity cookie) teacher rights for 12 hours, checked again on every teacher
action. Without them the page is read-only: students see the challenge, submit their own configurations and see
their rank.
"""

import time

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

import state
import store
import take_home

db = store.get_store()
bid = store.browser_id()
ss = st.session_state
st.title("Class")
if db.problem:
    st.warning(db.problem)

code = store.teacher_code()
_link = st.query_params.get("teacher")
if _link is not None:
    del st.query_params["teacher"]  # spent or not, out of the address bar at once
    try:
        if db.redeem_teacher_link(_link, bid):
            st.success("Teacher mode opened with the server's one-time link (the link will not work again).")
        else:
            st.error("This teacher link was used already or has expired: each server start prints a new one on its "
                     "console; the passcode works too.")
    except store.StoreError as e:
        st.error(str(e))


def is_teacher() -> bool:
    """Teacher rights of this browser, from the database (asked again before every teacher action)."""
    try:
        return db.is_teacher(bid)
    except store.StoreError:
        return False


teacher = is_teacher()

# ------------------------------------------------------------------------------------------------ teacher login
with st.expander("Teacher", expanded=False):
    if teacher:
        st.success("Teacher mode: you can set the challenge and reset the board.")
        if st.button("Leave teacher mode", key="c_logout"):
            try:
                db.revoke_teacher(bid)
            except store.StoreError as e:
                st.error(str(e))
            st.rerun()
    elif code is None:
        st.caption("Teacher mode is off on this server for passcodes: start it with "
                   "`streamlit run dashboard/server.py -- --teacher-code CODE` (or set COMPRESSION_LAB_TEACHER_CODE), "
                   "or open the one-time teacher link `dashboard/server.py` prints on its console, to set a challenge "
                   "and reset the board.")
    else:
        me = store.client()
        try:
            wait = db.passcode_wait(me)
        except store.StoreError:
            wait = 0.0
        with st.form("c_login", clear_on_submit=True):
            typed = st.text_input("Teacher passcode", type="password", key="c_code")
            go_in = st.form_submit_button("Enter teacher mode", disabled=wait > 0)
        if go_in:
            try:
                wait = db.passcode_attempt(me)  # counted before it is checked; refused while paused
                right = wait == 0 and store.check_code(typed, code)
                if right:
                    db.passcode_ok(me)
                    db.grant_teacher(bid, "passcode")
                    st.rerun()
                elif wait == 0:
                    time.sleep(0.5)  # guessing is slow, even between pauses
                    wait = db.passcode_wait(me)
                    st.error("Wrong passcode: the Class page stays read-only.")
            except store.StoreError as e:
                st.error(str(e))
        if wait > 0:
            st.error(f"Too many wrong passcodes from this address: try again in {int(wait) + 1} s. (The teacher's "
                     "one-time link from the server's console always works.)")

# ------------------------------------------------------------------------------------------------ the challenge
try:
    ch = db.challenge()
except store.StoreError as e:
    st.error(str(e))
    ch = None

if teacher:
    with st.container(border=True):
        st.subheader("Set the challenge")
        c1, c2, c3 = st.columns([1.2, 1.6, 1])
        models = state.models()
        current_model = (ch or {}).get("model", state.DEFAULT_MODEL)
        model = c1.selectbox("Model", models, index=models.index(current_model) if current_model in models else 0,
                             key="c_model", format_func=state.label)  # a --workload file: its name, not a path
        try:  # the model's metric, its units and direction (perplexity: lower is better, not a percentage)
            mf = state.facts(model)
        except Exception:  # a model that cannot be loaded: the challenge is worded for accuracy
            mf = {"metric": "accuracy", "percent": True, "higher_is_better": True}
        m_up, m_pct = mf.get("higher_is_better", True), mf["percent"]
        if m_up:
            kinds = {f"best {mf['metric']} under a file size (KB)": "max_size",
                     f"smallest file with {mf['metric']} at least" + (" (%)" if m_pct else ""): "min_metric"}
        else:
            kinds = {f"lowest {mf['metric']} under a file size (KB)": "max_size",
                     f"smallest file with {mf['metric']} at most" + (" (%)" if m_pct else ""): "min_metric"}
        kind = kinds[c2.radio("Goal", list(kinds), key="c_kind")]
        limit = c3.number_input("Size limit (KB)" if kind == "max_size" else
                                f"{mf['metric'].capitalize()} at " + ("least" if m_up else "most")
                                + (" (%)" if m_pct else ""),
                                min_value=0.0, max_value=100000.0, value=20.0 if kind == "max_size" else 95.0,
                                step=1.0, key=f"c_limit_{kind}")
        r1, r2 = st.columns([2, 1])
        simulated = r1.checkbox("Count simulated (fake-quant) results at their theoretical size", value=False,
                                key="c_sim")
        max_ram = r2.number_input("Max peak RAM (KB, 0 = no limit)", min_value=0.0, max_value=10_000_000.0,
                                  value=0.0, step=10.0, key="c_max_ram",
                                  help="peak inference RAM at batch 1: weights as held in memory + the input + the "
                                       "intermediate tensors alive at once (compression_core.peak_ram)")
        if st.button("Set challenge (starts a new, empty board)", type="primary", key="c_set"):
            if not is_teacher():  # checked again on the server side, whatever the page showed
                st.error("Only the teacher can set the challenge.")
            else:
                try:
                    db.set_challenge({"kind": kind, "model": model, "metric": mf["metric"], "percent": bool(m_pct),
                                      "higher_is_better": bool(m_up), "limit": float(limit),
                                      "count_simulated": bool(simulated),
                                      "max_ram_kb": float(max_ram) if max_ram > 0 else None})
                    st.rerun()
                except store.StoreError as e:
                    st.error(str(e))

if not ch:
    st.info("No challenge yet: the teacher sets one here (for example, best accuracy under 20 KB on digits-cnn).")
    st.stop()

shown = state.label(ch["model"])  # the model as every model list names it (a --workload file: never its path)
st.subheader("Challenge: " + store.challenge_text({**ch, "model": shown}))
size_rule = ("the smallest real file (dense or sparse-encoded)" +
             ("; simulated results count at their theoretical size" if ch.get("count_simulated")
              else "; simulated (fake-quant) results do not count"))
st.caption(f"{ch.get('metric', 'accuracy').capitalize()} on the {shown} test split as measured by the dashboard"
           + ("" if store.classroom.higher_is_better(ch) else " (lower is better)") + f"; size: {size_rule}"
           + ("; peak RAM: inference at batch 1 (weights + input + live activations), as Explore shows it"
              if store.classroom.max_ram_kb(ch) is not None else "") + ". "
           "Build a configuration on the Explore page, then submit it here under any display name.")


# ------------------------------------------------------------------------------------------------ submitting
def stats_row(stats: dict) -> dict:
    """A measured configuration in the history row's units (what ``store.entry_size_kb`` reads)."""
    return {"accuracy": stats["accuracy"], "size_bytes": stats["size_bytes"], "simulated": bool(stats.get("simulated")),
            "sparse_KB": None if stats.get("sparse_size_bytes") is None else stats["sparse_size_bytes"] / 1024,
            "theoretical_KB": None if stats.get("theoretical_size_bytes") is None
            else stats["theoretical_size_bytes"] / 1024,
            "peak_ram_KB": None if stats.get("peak_ram_bytes_b1") is None else stats["peak_ram_bytes_b1"] / 1024}


candidates: dict[str, dict] = {}
cur, cur_stats = ss.get("current_recipe"), ss.get("current_stats")
if cur and cur_stats and cur.get("model") == ch["model"] and cur.get("steps"):
    candidates[f"current Explore configuration: {state.describe(cur['steps'])}"] = {
        **stats_row(cur_stats), "label": state.describe(cur["steps"]), "recipe": cur}
try:
    for r in reversed(state.history()):
        if r.get("ref", r.get("model")) == ch["model"] and not r.get("baseline") and r.get("how") != "preview" \
                and r.get("accuracy") is not None:
            name = r.get("name") or r.get("label", "configuration")
            candidates.setdefault(f"history #{r['id']}: {name}", r)
except Exception as e:  # history unavailable: submitting the current configuration still works
    st.caption(f"(history unavailable: {state.one_line(e)})")

st.subheader("Submit")
s1, s2 = st.columns([1, 2])
s1.text_input("Display name (shown on the board; no account)", key="c_name", max_chars=40)
if not candidates:
    s2.info(f"Nothing to submit for {shown} yet: pick {shown} on the Explore page and compress it.")
else:
    pick = s2.selectbox("Configuration", list(candidates), key="c_pick")
    row = candidates[pick]
    size_kb = store.entry_size_kb(row, bool(ch.get("count_simulated")))
    if size_kb is None:
        s2.caption("A simulated (fake-quant) result has no real file; this challenge does not count it. Use a real "
                   "quantization (int8, int4 packed) or pruning.")
    else:
        ram_kb = row.get("peak_ram_KB")
        ok = store.qualifies(ch, row["accuracy"], size_kb, ram_kb)
        ram_limit = store.classroom.max_ram_kb(ch)
        ram_text = "" if ram_kb is None else f", {ram_kb:,.1f} KB peak RAM"
        why = ""
        if not store.classroom.ram_ok(ch, ram_kb):
            why = (f" (peak RAM {ram_kb:,.1f} KB is over the {ram_limit:g} KB limit)" if ram_kb is not None
                   else " (no peak-RAM figure for it: measure it on the Explore page)")
        s2.caption(f"{store.classroom.metric_shown(ch, row['accuracy'])} at {size_kb:,.1f} KB{ram_text}: "
                   + ("meets the constraint." if ok else f"does NOT meet the constraint{why} (it is listed, "
                                                         "unranked)."))
        if st.button("Submit to the challenge", type="primary", key="c_submit"):
            try:
                db.submit(bid, ss.get("c_name", ""), {
                    "accuracy": float(row["accuracy"]), "size_kb": float(size_kb), "model": ch["model"],
                    "label": str(row.get("label", ""))[:200], "recipe": row.get("recipe"),
                    "simulated": bool(row.get("simulated")),
                    "peak_ram_kb": None if ram_kb is None else float(ram_kb)})
                st.success("Submitted: your point is on the board below.")
            except store.StoreError as e:
                st.error(str(e))
    if row.get("recipe"):  # the chosen configuration's model to take home (its numbers as measured here)
        with st.expander("Take this model home (bundle and ONNX)"):
            take_home.offer(row["recipe"], "take_c",
                            {"accuracy": row.get("accuracy"), "size_bytes": row.get("size_bytes")}, title=None)


# ------------------------------------------------------------------------------------------------ the board
def board_chart(ch: dict, subs: list[dict], base: dict | None) -> go.Figure:
    metric, pct = ch.get("metric", "accuracy"), ch.get("percent", True)
    unit = " %" if pct else ""
    val = store.classroom.metric_value
    fig = go.Figure()
    within = [s for s in subs if store.qualifies(ch, s["accuracy"], s["size_kb"], s.get("peak_ram_kb"))]
    over = [s for s in subs if not store.qualifies(ch, s["accuracy"], s["size_kb"], s.get("peak_ram_kb"))]
    for label, pts, color, symbol in (("meets the constraint", within, "#2ca02c", "circle"),
                                      ("does not", over, "#9e9e9e", "x")):
        fig.add_trace(go.Scatter(
            x=[p["size_kb"] for p in pts], y=[val(ch, p["accuracy"]) for p in pts], mode="markers", name=label,
            marker=dict(color=color, size=11, symbol=symbol, line=dict(width=1, color="white")),
            text=[p["display_name"] for p in pts],
            hovertemplate=f"%{{text}}: %{{y:.2f}}{unit} at %{{x:,.1f}} KB<extra></extra>"))
    if base is not None:
        fig.add_trace(go.Scatter(x=[base["size_bytes"] / 1024], y=[val(ch, base["accuracy"])], mode="markers",
                                 name="baseline (uncompressed)", marker=dict(color="#1f77b4", size=14, symbol="star"),
                                 hovertemplate=f"baseline: %{{y:.2f}}{unit} at %{{x:,.1f}} KB<extra></extra>"))
    if ch.get("kind", "max_size") == "max_size":
        fig.add_vline(x=float(ch["limit"]), line_dash="dash", line_color="#d62728",
                      annotation_text=f"limit {float(ch['limit']):g} KB", annotation_position="top right")
    else:
        fig.add_hline(y=float(ch["limit"]), line_dash="dash", line_color="#d62728",
                      annotation_text=f"at {'least' if store.classroom.higher_is_better(ch) else 'most'} "
                                      f"{float(ch['limit']):g}{unit}", annotation_position="bottom right")
    lower = "" if store.classroom.higher_is_better(ch) else ", lower is better"
    fig.update_layout(title=dict(text=f"The class's submissions: {metric} vs file size ({state.label(ch['model'])})", x=0.0),
                      xaxis_title="file size (KB, smallest real file)",
                      yaxis_title=f"test {metric}" + (" (%)" if pct else "") + lower,
                      # always a legend (the baseline star alone was unexplained), under the axis title
                      showlegend=True, legend=dict(orientation="h", yref="container", y=0, yanchor="bottom"),
                      height=420, margin=dict(l=50, r=20, t=50, b=40))
    return fig


@st.fragment(run_every=3)
def board() -> None:
    """The leaderboard and the chart, refreshed every 3 s without rerunning the rest of the page."""
    try:
        live = db.challenge()
        subs = db.submissions()
    except store.StoreError as e:
        st.error(str(e))
        return
    if not live or live.get("revision") != ch.get("revision"):
        st.info("The teacher changed the challenge: reload the page to see it.")
        return
    ranked = store.leaderboard(live, subs)
    st.subheader(f"Leaderboard ({len(ranked)} students, {len(subs)} submissions)")
    mine = next((r for r in ranked if r["browser"] == bid), None)
    n_ok = sum(1 for r in ranked if r["qualifies"])
    if mine is None:
        st.caption("You have not submitted yet.")
    elif mine["rank"] is not None:
        st.success(f"Your rank: {mine['rank']} of {n_ok} ({mine['display_name']}: "
                   f"{store.classroom.metric_shown(live, mine['accuracy'])} at "
                   f"{mine['size_kb']:,.1f} KB).")
    else:
        st.warning(f"Your best submission does not meet the constraint yet "
                   f"({store.classroom.metric_shown(live, mine['accuracy'])} at "
                   f"{mine['size_kb']:,.1f} KB), so it is unranked.")
    if ranked:  # a plain table: readable by screen readers and on a projector, no scrolling grid
        pct = live.get("percent", True)
        col = f"{live.get('metric', 'accuracy')}" + (" (%)" if pct else "")
        table = pd.DataFrame([{  # every column of one type (a mixed column costs pyarrow a logged traceback)
            "rank": str(r["rank"]) if r["rank"] is not None else "-", "name": str(r["display_name"]),
            col: round(store.classroom.metric_value(live, r["accuracy"]), 2 if pct else 4),
            "size (KB)": round(r["size_kb"], 1),
            **({"peak RAM (KB)": "-" if r.get("peak_ram_kb") is None else f"{r['peak_ram_kb']:,.1f}"}
               if store.classroom.max_ram_kb(live) is not None else {}),
            "meets the constraint": "yes" if r["qualifies"] else "no", "configuration": str(r.get("label") or ""),
            "you": "<- you" if r["browser"] == bid else ""} for r in ranked]).set_index("rank")
        # shown as the app shows numbers elsewhere: percent with 2 decimals, KB with 1 (not "98.6100")
        st.table(table.style.format({col: "{:.2f}" if pct else "{:.4g}", "size (KB)": "{:,.1f}"}))
    try:
        base = state.baseline_view(live["model"])["stats"]
    except Exception:  # a model this build does not have: the chart just has no baseline star
        base = None
    st.plotly_chart(board_chart(live, subs, base), key="c_chart")


board()

# ------------------------------------------------------------------------------------------------ teacher tools
if teacher:
    st.subheader("Teacher tools")
    t1, t2 = st.columns([1, 1])
    sure = t1.checkbox("Yes, remove every submission", key="c_sure")
    if t1.button("Reset the board", disabled=not sure, key="c_reset"):
        if not is_teacher():  # the server checks, not just the page
            st.error("Only the teacher can reset the board.")
        else:
            try:
                n = db.reset_class()
                st.success(f"Removed {n} submissions.")
            except store.StoreError as e:
                st.error(str(e))

    def submissions_csv() -> str:
        """Built when the button is clicked (in Streamlit's download thread, no st.* calls), from the rows then in
        the database: a page left open while students submit still downloads every current row."""
        try:
            return store.classroom.submissions_csv(db.challenge(), db.submissions())
        except store.StoreError as e:
            return f"error\n{' '.join(str(e).split())}\n"

    t2.download_button("Download all submissions (CSV)", submissions_csv, file_name="class-submissions.csv",
                       mime="text/csv", key="c_csv")
