"""Explore: pick a model and layers, move the compression controls, watch size, latency and accuracy change.

Every control is built from the library's technique registry (``techniques.py``): the pruning and quantization
lists are the registered techniques of those families that apply to the model's layers, and each one's sliders
come from its config's fields. Nothing here names a technique.
"""

import pandas as pd
import streamlit as st

import charts
import engines
import explain
import jobs
import state
import store
import take_home
import techniques as T
from jobs.panel import jobs_changed, jobs_watched, reset_watched  # the workbench's job panels, polled below
from compression_core.advisories import collapse  # the one "collapsed, and what helps" rule (apply says it too)
from compression_core.budget import FIT_PRUNE_LEVELS  # the per-layer grid the budget fit picks from
from compression_core.graph import build_graph
from compression_core import inputs as I
from streamlit.runtime.scriptrunner import get_script_run_ctx
from streamlit.runtime.scriptrunner_utils.script_requests import ScriptRequestType

NONE = "none"
FAST = {"displayModeBar": False}  # no plotly toolbar to build on every redraw (Streamlit's own toolbar stays)


def default(key: str, value) -> str:
    """Give a widget its first value through session state (so values survive page switches without warnings)."""
    st.session_state.setdefault(key, value)
    return key


@st.cache_data(show_spinner=False)
def model_units(ref: str) -> set[str]:
    """The prunable units the library's graph finds in the model (neurons, channels, heads)."""
    wl = state.baseline(ref)
    try:
        g = build_graph(wl.model, I.take(wl.test.x, slice(0, 2)))
        return {u for u in ("neurons", "channels", "heads") if g.units(u)}
    except Exception:  # the graph cannot trace this model: offer every unit, the library explains in one line
        return {"neurons", "channels", "heads"}


def overrides_form(t: T.Technique, layers: list[str], ref: str) -> dict:
    """One slider per chosen layer for a technique with per-layer ``overrides`` ("global" = the main setting),
    drawn only while their expander is open: on every move the browser redrew every slider, open or not (MiniLM's
    36 layers x 2 techniques: ~0.15-0.2 s of each move's redraw). While it is closed the values stay in session state
    under the sliders' keys (``x_{kind}_ovr_{ref}_{layer}``, the keys Search and Sensitivity set): a slider not drawn
    loses its widget state at the end of the run, so its value is put back as plain session state."""
    levels = T.override_levels(t, FIT_PRUNE_LEVELS)
    if levels is None or not layers:
        return {}
    ss = st.session_state
    keys = {layer: f"x_{t.kind}_ovr_{ref}_{layer}" for layer in layers}
    loaded = ss.get(f"x_{t.kind}_ovr_loaded_{ref}")  # per-layer values Search loaded: in view
    is_open = f"x_{t.kind}_ovr_open_{ref}"
    if loaded and ss.get(f"{is_open}_for") != loaded:  # newly loaded: the expander opens once, to show them
        ss[is_open], ss[f"{is_open}_for"] = True, loaded
    note = st.empty()
    box = st.expander("Per-layer values", expanded=bool(loaded), key=is_open, on_change="rerun")
    if box.open:
        with box:
            for layer, k in keys.items():
                st.select_slider(layer, ["global"] + levels, key=default(k, "global"))
    else:
        for k in keys.values():
            if k in ss:
                ss[k] = ss[k]  # kept while its slider is not drawn
    out = {layer: ss[k] for layer, k in keys.items() if ss.get(k, "global") != "global"}
    if loaded and out:
        note.info(f"Per-layer values loaded ({loaded}); the main slider applies to the layers set to 'global'.")
    elif loaded:  # every layer back on 'global': nothing loaded is left
        ss.pop(f"x_{t.kind}_ovr_loaded_{ref}", None)
    return out


def technique_panel(title: str, fam: str, key: str, wl, f: dict, include_cls: bool, chosen: list[str],
                    widget: str = "radio") -> tuple[T.Technique | None, dict, dict, list[T.Technique]]:
    """One family's choice (radio or selectbox from the registry), its settings and per-layer overrides; returns
    (technique, settings, overrides, add-ons ticked)."""
    st.subheader(title)
    offered = [t for t in T.family(fam) if not T.is_addon(t)]
    fits = [t for t in offered if T.applicable(t, wl.model, f["classifier"], include_cls)]
    labels = [NONE] + [t.label for t in fits]
    if st.session_state.get(key) not in labels:
        st.session_state[key] = NONE
    pick = (st.radio if widget == "radio" else st.selectbox)(f"{title} kind", labels, key=key)
    left_out = [t.label for t in offered if t not in fits]
    if left_out:
        st.caption(f"Not offered for this model (no {'/'.join(sorted({lt for t in offered if t not in fits for lt in t.ui.layer_types}))} "
                   f"layer{'' if include_cls else ' besides the classifier'}): {', '.join(left_out)}.")
    if pick == NONE:
        return None, {}, {}, []
    t = next(x for x in fits if x.label == pick)
    values = T.form(st, t, ref=f["reference"], model_units=model_units(f["reference"]), models=state.models(),
                    model_label=state.label)
    layers = T.layers_of(wl.model, t.ui.layer_types, f["classifier"], include_cls) if t.ui.layer_types else []
    ovr = overrides_form(t, [n for n in layers if n in chosen], f["reference"])
    addons = []
    for a in T.family(fam):
        if T.is_addon(a) and st.checkbox(a.label, key=default(f"x_{a.kind}_after_{t.kind}", t.ui.storage == "dense"),
                                         help=f"adds the step {a.kind} after {t.kind}"):
            addons.append(a)
    return t, values, ovr, addons


def ram_text(n: int) -> str:
    return f"{n / 2**20:,.2f} MB" if n >= 2**20 else f"{n / 1024:,.1f} KB"


def for_layers(t: T.Technique, targets: list[str] | None, wl, f: dict) -> list[str] | None:
    """The user's layer choice narrowed to the layers ``t`` acts on (None: the technique's own default)."""
    if targets is None or not t.ui.layer_types:
        return targets
    mine = set(T.layers_of(wl.model, t.ui.layer_types, f["classifier"], True))
    return [n for n in targets if n in mine]


def session_id() -> str:
    """This browser tab's Streamlit session (the stage log's key)."""
    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else "no-session"


def stage_caption(stage: str, ref: str, f: dict, result: dict | None, est: dict) -> str:
    """The one line saying which numbers the page shows. Its prefix is a contract (benchmarks.live and the browser
    tests wait for it): ``Stage: estimate``, ``Stage: preview`` or ``Stage: full test set``."""
    items = state.item_name(ref)
    if stage == "estimate":
        if est.get("value") is not None:
            band = est.get("band")
            if band is None and est.get("band_error"):  # its job failed: the estimate stands without a band, and why
                bt = f", with no error band ({est['band_error']})"
            elif band is None:
                bt = ", its error band being measured"
            else:
                bt = (f", ±{band * 100:.1f} points" if f["percent"] else f", ±{band:.4g}") + \
                     f" (80 % of {est.get('checks')} random configurations measured on the test set were within it)"
            what = f"{f['metric']} from per-layer sensitivity curves on {est['split']}{bt}"
        elif est.get("reason"):
            what = f"{f['metric']} not estimated: {est['reason']}"
        else:
            what = f"the {f['metric']} estimate is being prepared ({est.get('status') or 'starting'})"
        return (f"Stage: estimate — size, parameters and FLOPs computed exactly; {what}. The preview subset is "
                "being measured.")
    if stage == "preview":
        n, total = result["preview"]
        return (f"Stage: preview — measured on {n} of {total} test {items} (the first ones, fixed; the change is "
                "against the baseline on the same ones); the whole test set is being measured in the background.")
    return f"Stage: full test set — measured on all {f['test_items']} test {items}."


# ------------------------------------------------------------------------------------------ page
st.title("Explore: compress a model, watch the numbers")
refs = state.models()
if st.session_state.get("x_model") not in refs:
    st.session_state["x_model"] = refs[state.default_index(refs)]
ref = st.selectbox("Model", refs, key="x_model", format_func=state.label)
try:
    wl = state.baseline(ref)
    f = state.facts(ref)
    base = state.baseline_view(ref)
except Exception as e:  # a workload whose data or metric cannot be measured: one line
    st.error(state.one_line(e))
    st.stop()
bstats = base["stats"]
state.curves_status(ref)  # the estimate's sensitivity curves: started in a background job the first time, on disk after
state.prepare_moves(ref)  # a big model's preview inputs recorded in the background: the first move is not the slow one
st.caption(f"{f['architecture']}{' - ' + f['task'] if f['task'] else ''}. Baseline test {f['metric']} "
           f"{state.metric_text(bstats['accuracy'], f)}, {bstats['params']:,} parameters, "
           f"{bstats['size_bytes'] / 1024:,.1f} KB file"
           + (f", {ram_text(bstats['peak_ram_bytes_b1'])} peak RAM at batch 1." if bstats.get("peak_ram_bytes_b1") else "."))

with st.expander("Layers of this model", expanded=False):
    st.dataframe(pd.DataFrame([{k: r[k] for k in ("name", "type", "params", "nonzero", "sparsity", "dtype", "bits")}
                               for r in bstats["layers"]]), hide_index=True, width="stretch")

# No fragment on this page is nested in another one. When a rerun request arrives while the workbench fragment is
# running, Streamlit (1.67) clears the run's unsent messages of the fragments in the next run only: a fragment
# nested in the workbench kept its messages while the workbench's own ones before it were dropped, and the browser
# got an element at a position past the end of the column it had ('Bad delta path index 6 (should be between
# [0, 5])'): a blank page. So the latency panel is plain code in the workbench, the job panels in it (training,
# export, faster engine, timing) are plain elements too (jobs/panel.py draws no fragment inside one), and the stage
# poller is a fragment of its own at the top level, in a slot made here, before the workbench (a message of its own
# that is kept always lands in a slot the browser has); it also reruns the page while a job shown in the workbench is
# queued or running, when what its panel shows changes (about every second: its elapsed time).
poll_slot = st.container()
POLLED = "_x_stage_polled"  # (move, stage) the workbench shows while a later stage is being measured, else None
ARMED = "_x_poll_armed"  # whether the last full run started the poller (run_every is set on a full run only)


def fragment_run() -> bool:
    """Whether this run is a fragment rerun (a slider move), not a full run of the page."""
    ctx = get_script_run_ctx()
    return bool(ctx is not None and ctx.fragment_ids_this_run)


def request_pending() -> bool | None:
    """Whether this session asked for another run (the student's next move, a poll) or a stop since this run began;
    None when that cannot be told (Streamlit (1.67) keeps the request in ``ScriptRequests._state`` until the run
    reaches a yield point; without that internal a move does not wait in its run: the poller shows its stages)."""
    ctx = get_script_run_ctx()
    state_now = getattr(getattr(ctx, "script_requests", None), "_state", None)
    if not isinstance(state_now, ScriptRequestType):
        return None
    return state_now is not ScriptRequestType.CONTINUE


# A slider move's run waits for its next stage here (the run is a fragment run: everything is on screen already, the
# header shows "running"), then reruns the workbench alone: the preview is on screen the moment it is measured, with
# no poll interval and no run of the whole page. A new move or a stop of this session ends the wait at once.
STAGE_WAIT_S = 120  # BERT-base's whole test set takes ~50 s; past this the poller takes over


@st.fragment
def workbench() -> None:
    """Controls and results: a slider move reruns only this fragment (not the router, the model list, the
    baseline caption or the layer table above), so the browser gets only the deltas of what changed. It holds no
    fragment (see the note above ``poll_slot``)."""
    reset_watched()  # the job panels this run draws are the ones the poller watches
    controls, view = st.columns([1, 2], gap="large")

    # ------------------------------------------------------------------------------------------ controls
    with controls:
        st.subheader("Layers")
        cls = f["classifier"]
        include_cls = st.checkbox(f"Also compress the classifier ({cls})", key=default(f"x_cls_{ref}", False),
                                  disabled=cls is None)
        if cls:
            st.caption(f"The final classifier `{cls}` is left alone by default: pruning its outputs removes classes, "
                       "and it costs the most accuracy per byte saved.")
        all_layers = T.selectable_layers(wl.model, cls, include_cls)
        if st.session_state.get(f"x_layers_{ref}") is not None:
            st.session_state[f"x_layers_{ref}"] = [n for n in st.session_state[f"x_layers_{ref}"] if n in all_layers]
        chosen = st.multiselect("Layers to compress", all_layers, key=default(f"x_layers_{ref}", all_layers))
        targets = None if set(chosen) == set(all_layers) else [n for n in all_layers if n in chosen]

        prune_t, prune_v, prune_o, addons = technique_panel("Pruning", "prune", f"x_prune_{ref}", wl, f, include_cls,
                                                             chosen)
        quant_t, quant_v, quant_o, quant_addons = technique_panel("Quantization", "quantize", "x_quant", wl, f,
                                                                  include_cls, chosen, widget="selectbox")
        if explain.grid_bits([quant_v]) is not None:  # weight bits < 8 under int8: say what moves and what not
            st.caption(explain.grid_note(explain.grid_bits([quant_v])))

        st.subheader("Training (runs on a button)")
        trainers = []
        for t in T.family("train") + T.family("distill"):
            if st.checkbox(t.label, key=default(f"x_on_{t.kind}", False)):
                vals = T.form(st, t, ref=ref, models=state.models(), model_label=state.label)
                trainers.append((t, vals))


    def steps_for(training: bool) -> list[dict]:
        """The recipe steps for the controls (``training=False``: only the techniques that do not train)."""
        out: list[dict] = []
        picked = ([(prune_t, prune_v, prune_o)] if prune_t else []) + [(a, {}, {}) for a in addons]
        picked += [(t, v, {}) for t, v in trainers]
        picked += ([(quant_t, quant_v, quant_o)] if quant_t else []) + [(a, {}, {}) for a in quant_addons]
        for t, values, ovr in picked:
            if t.ui.trains and not training:
                continue
            out.append(T.step(t, values, for_layers(t, targets, wl, f), include_cls, ovr))
        return out


    preview_steps = steps_for(training=False)
    full_steps = steps_for(training=True)
    preview = state.recipe_dict(f["reference"], preview_steps)
    full = state.recipe_dict(f["reference"], full_steps)
    trained = st.session_state.setdefault("trained_keys", set())
    with controls:
        if full_steps != preview_steps:
            # training runs as a job in a worker process (jobs.py): queue position, progress, cancel, limits
            if state.recipe_key(full) not in trained and jobs.training_panel(
                    full, state.recipe_key(full), store.browser_id(), state.adopt_job_result):
                trained.add(state.recipe_key(full))
            if state.recipe_key(full) in trained:
                st.success("Trained: the numbers on the right include the training steps.")
            else:
                st.caption("Showing the preview without training; press the button to run the training steps.")
    current = full if state.recipe_key(full) in trained else preview
    st.session_state["current_recipe"] = current
    storages = [T.by_kind(s["kind"]).ui.storage for s in current["steps"] if T.by_kind(s["kind"])]

    # ------------------------------------------------------------------------------------------ results
    with view:
        after = None
        result = None
        stage = None  # which numbers are shown: "estimate", "preview" or "full" (state/stages.py)
        est: dict = {}
        move = state.recipe_key(current)
        if current["steps"]:
            try:
                live = state.live_view(current)  # at once; a big model's preview and whole test set fill in behind
                stage, result = live["stage"], live["view"]
                if result is None:  # estimate: size computed, the metric estimated from sensitivity curves
                    after, est = state.estimated_stats(move, bstats, bstats["accuracy"])
                else:  # measured; sizes, parameters and FLOPs stay the computed ones (the same on every stage)
                    after = state.with_cost(result["stats"], state.cost_view(move), bstats)
            except Exception as e:  # CompressionError, pydantic errors, anything unexpected: one line
                st.error(state.one_line(e))
                stage, after = None, None
        # a later stage to wait for: a slider move's run waits for it at its end and reruns the workbench (see
        # STAGE_WAIT_S); on a full run of the page, or while the poller runs anyway, the poller (below the workbench)
        # watches this move, and a move whose wait ends without it reruns the page once, which starts the poller
        st.session_state[POLLED] = (move, stage) if stage in ("estimate", "preview") else None
        base_shown = result.get("baseline_accuracy", bstats["accuracy"]) if result else bstats["accuracy"]
        bview = {**bstats, "accuracy": base_shown}  # the baseline on the subset the numbers shown are measured on
        st.session_state["current_stats"] = after if stage in ("preview", "full") else None
        state.record(ref, "baseline", None, bstats)
        # one slot for the numbers, the stage line and the buttons: what they hold varies by stage (the extra
        # metrics' row, the save button), and the charts below keep their places, so the browser updates them
        # instead of drawing them anew (plotly redraws a chart whose place in the page changed). Inside it every
        # optional part has its own fixed slot (``st.empty``), drawn empty when absent: a move's run that waits
        # for its next stage keeps the run open, and an element of the previous run that this run did not
        # overwrite (e.g. the last move's "Stage: full test set" line one place further down) would stay on screen
        # beside the new stage line until the run ends
        with st.container():
            save_slot = st.empty()
            if after is not None and stage == "full":  # trained ones kept; a measured move replaces the current row
                applied = full_steps != preview_steps and state.recipe_key(full) in trained
                state.record(ref, state.describe(current["steps"]), current, after,
                             how="applied" if applied else "preview")
                with save_slot.container():
                    if st.button("Save to history", key="b_save",
                                 help="keep this configuration in your history (Experiments)"):
                        saved = state.record(ref, state.describe(current["steps"]), current, after, how="saved")
                        st.caption(f"Saved as row {saved['id']} of your history (Experiments page).")

            if after is not None:
                (m1, m2), (m3, m4) = st.columns(2), st.columns(2)  # 2 x 2: four across cut values off at 1280 px
                title = (state.metric_title(f) + (" (simulated)" if after["simulated"] else "")
                         + {"estimate": " (estimate)", "preview": " (preview)"}.get(stage, ""))
                if after["accuracy"] is None:  # the estimate is being prepared (or cannot be made): the preview follows
                    m1.metric(title, "…", help=est.get("reason") or est.get("status") or None)
                else:
                    m1.metric(title, state.metric_text(after["accuracy"], f),
                              state.metric_delta(after["accuracy"], base_shown, f),
                              delta_color=state.delta_color(f))

                def counted(col, label: str, k: str, text) -> None:
                    if after.get(k) is None:
                        col.metric(label, "…", help="known after applying")
                    else:
                        col.metric(label, text(after[k]), f"{after[k] / max(bstats[k], 1):.2f}x of before",
                                   delta_color="off", delta_arrow="off")

                counted(m2, "File size (dense)", "size_bytes", lambda v: f"{v / 1024:,.1f} KB")
                counted(m3, "Non-zero parameters", "nonzero_params", lambda v: f"{v:,}")
                counted(m4, "FLOPs if zeros skipped", "nonzero_flops", lambda v: f"{v:,}")
                ram_slot, warn_slot, extra_slot, stage_slot = st.empty(), st.empty(), st.empty(), st.empty()
                if after.get("peak_ram_bytes_b1") and bstats.get("peak_ram_bytes_b1"):
                    with ram_slot.container():
                        m5, _ = st.columns(2)
                        m5.metric("Peak RAM (batch 1)", ram_text(after["peak_ram_bytes_b1"]),
                                  f"{after['peak_ram_bytes_b1'] / bstats['peak_ram_bytes_b1']:.2f}x of before",
                                  delta_color="off", delta_arrow="off",
                                  help="weights as held in memory + one input + the intermediate tensors alive at "
                                       "once, in torch (compression_core.peak_ram)")
                collapsed = collapse(base_shown, after["accuracy"], wl) if after["accuracy"] is not None else None
                if collapsed:
                    warn_slot.warning(collapsed)
                if result and result.get("extra"):  # the workload's extra metrics (a transformer's embedding fidelity)
                    with extra_slot.container():
                        for col, (name, value) in zip(st.columns(len(result["extra"])), result["extra"].items()):
                            col.metric(name.capitalize(), f"{value:.4f}",
                                       help=f"{name} of the compressed model (workload metric)")
                if stage is not None:
                    state.stages.record(session_id(), move, stage)
                    stage_slot.caption(stage_caption(stage, ref, f, result, est))
            else:
                st.info("Move a control on the left: the charts compare the compressed model with the baseline.")

        c1, c2 = st.columns(2)
        rk = f"{move}|{stage}" if after is not None else ""  # names the result (and its stage) every chart shows
        sized = after if after is not None and after.get("size_bytes") is not None else None
        scored = after if after is not None and after["accuracy"] is not None else None
        c1.plotly_chart(state.figure("size", (ref, rk), lambda: charts.size_chart(bstats, sized)), key="size_chart",
                        config=FAST)
        c2.plotly_chart(state.figure("acc", (ref, rk), lambda: charts.accuracy_chart(bview, scored, f["metric"],
                                                                                     f["percent"],
                                                                                     f["higher_is_better"])),
                        key="acc_chart", config=FAST)

        def latency_panel():
            """Before and after timed together on request, in the chosen runtime(s), as a ``latency`` job in a worker
            process (progress and Cancel meanwhile); every timing is kept. Not a fragment of its own: nested in the
            workbench it could blank the page (see the note above ``poll_slot``)."""
            cores = state.cpu().cores
            l1, l2, l3, l4 = st.columns([1, 1, 1.5, 1.5], vertical_alignment="bottom")
            batch = l1.selectbox("Batch", [1, 8, 32], key=default("x_batch", 1))
            threads = l2.selectbox("Threads", list(range(1, min(cores, 4) + 1)), key=default("x_threads", 1))
            runtimes = ["torch"] + (["ONNX Runtime", "torch and ONNX Runtime"] if state.ort_module() is not None else [])
            if st.session_state.get("x_runtime") not in runtimes:
                st.session_state["x_runtime"] = "torch"
            runtime = l3.selectbox("Runtime", runtimes, key="x_runtime",
                                   help="ONNX Runtime: the model exported to ONNX and run the way it is often deployed")
            if after is None:
                l4.button("Time before vs after", key="b_latency", disabled=True, width="stretch")
                st.caption("Pick a compression first: latency is timed before vs after, together.")
                return
            key = state.recipe_key(current)
            chosen_rt = [r for r in state.RUNTIMES if r in runtime]
            timings = st.session_state.setdefault("latency", {})
            failed = st.session_state.setdefault("latency_errors", {})  # cfg -> one line per runtime that could not run
            cfg = (key, batch, threads, runtime)
            pressed = l4.button("Time before vs after", key="b_latency", width="stretch",
                                help="runs both models alternately for about a second, in a worker process (progress "
                                     "and Cancel below); press again to time again")
            # timed in a worker process (jobs.run_latency), never in the page's: progress and Cancel meanwhile (plain
            # elements, polled by the page's poller), and a student leaving cancels it (the job panel attaches it)
            job = engines.latency_job_key(cfg)
            res = jobs.job_panel("latency", engines.latency_payload(ref, current, batch, threads, chosen_rt)
                                 if pressed else None, job, store.browser_id(), start=pressed)
            if res is not None:  # first seen: recorded once, kept here (and dropped from the job panel's results)
                st.session_state["_job_results"].pop(job, None)
                for c in res["timings"]:
                    state.record_latency(ref, current, after, c)
                timings[cfg] = res["timings"]
                failed[cfg] = [f"{e['runtime']}: {e['error']}" for e in res["errors"]]
            for line in failed.get(cfg, []):  # a model ONNX cannot export: one line
                st.error(line)
            comps = timings.get(cfg)
            if comps is None:
                if job not in st.session_state.get("_jobs", {}):  # (while it runs, its progress says enough)
                    st.caption(f"Latency at batch {batch}, {threads} thread{'s' if threads > 1 else ''}: press the "
                               "button. Before and after are timed together, alternating, so both see the same "
                               "machine.")
                return
            if comps:
                st.plotly_chart(charts.latency_chart(comps), key="lat_chart")
            # slower than fp32: one line with the ratio; what is faster comes from the engines job (on request)
            lines = [engines.slower_line(engines.label_of(current), c, batch, threads) for c in comps]
            engines.slower_then_faster(ref, current, batch, threads, [x for x in lines if x])
            try:  # peak inference RAM at batch 1 and at the batch just timed (torch)
                st.dataframe(pd.DataFrame(engines.peak_ram_rows(key, ref, batch)), hide_index=True)
            except Exception as e:
                st.error(f"peak RAM: {state.one_line(e)}")
            if "ONNX Runtime" in chosen_rt and state.ort_module() is not None:
                try:
                    rows = [{"runtime": "ONNX Runtime", "model": lbl, "file (KB)": round(s["size_bytes"] / 1024, 1),
                             f"{f['metric']}": state.metric_text(s["accuracy"], f),
                             **engines.ort_peak_ram_cells(k, ref, batch)}
                            for lbl, s, k in (("before", state.ort_view(None, ref), None),
                                              ("after", state.ort_view(key, ref), key))]
                    st.dataframe(pd.DataFrame(rows), hide_index=True)
                except Exception as e:
                    st.error(f"ONNX Runtime: {state.one_line(e)}")
            st.markdown("\n\n".join(explain.why_speed(comps, storages, state.cpu())))

        latency_panel()
        if after is not None:
            notes = explain.why_size(bstats, after, storages, classifier=None if include_cls else f["classifier"]) \
                if None not in (after.get("size_bytes"), after.get("nonzero_params")) else []
            if notes:
                st.info("\n\n".join(notes))

        # One detail chart at a time: every chart on the page is redrawn by plotly.js on each slider move (it was
        # most of the browser's time), so the details the student is not looking at are not drawn at all.
        details = ["Per layer", "Weights", *(["Per class", "Confusion"] if base["confusion"] is not None else [])]
        if st.session_state.get("x_detail") not in details:
            st.session_state["x_detail"] = details[0]
        detail = st.segmented_control("Detail", details, key="x_detail", label_visibility="collapsed", required=True)
        after_cm = result["confusion"] if result else None
        if detail == "Per layer":
            grid = explain.grid_layers(bstats["layers"], after["layers"], explain.grid_bits(current["steps"])) \
                if after else {}
            st.plotly_chart(state.figure("layers", (ref, rk), lambda: charts.layer_chart(
                bstats["layers"], after["layers"] if after else None, grid)), key="layer_chart", config=FAST)
        elif detail == "Weights":
            weighted = [r["name"] for r in (after or bstats)["layers"] if "Norm" not in r["type"]]
            sizes = {r["name"]: r["params"] for r in bstats["layers"]}
            if st.session_state.get(f"x_hist_{ref}") not in weighted and weighted:
                st.session_state[f"x_hist_{ref}"] = max(weighted, key=lambda n: sizes.get(n, 0))
            layer = st.selectbox("Layer for the weight histogram", weighted, key=f"x_hist_{ref}")

            def hist():
                w_before = state.layer_weights(None, ref, layer)
                w_after = state.layer_weights(state.recipe_key(current), ref, layer) \
                    if after is not None and stage != "estimate" else None  # not applied yet: drawn when measured
                return charts.weight_histogram(w_before, w_after, layer)

            if layer is not None and state.layer_weights(None, ref, layer) is not None:
                st.plotly_chart(state.figure("hist", (ref, rk, layer), hist), key="hist_chart", config=FAST)
            else:
                st.caption(f"{layer} has no weight matrix of its own to plot.")
        elif detail == "Per class":
            st.plotly_chart(state.figure("classes", (ref, rk), lambda: charts.per_class_chart(
                base["confusion"], after_cm, f["class_names"])), key="class_chart", config=FAST)
        elif detail == "Confusion":
            st.plotly_chart(state.figure("confusion", (ref, rk), lambda: charts.confusion_chart(
                after_cm if after_cm is not None else base["confusion"], f["class_names"],
                "Confusion matrix, " + ("after" if result else "baseline") + " (counts)")), key="cm_chart", config=FAST)
        if result and result.get("steps"):  # the table drawn only while open (a data grid the browser redrew per stage)
            steps_box = st.expander("What each step did", key="x_steps_open", on_change="rerun")
            if steps_box.open:
                with steps_box:
                    st.dataframe(pd.DataFrame(result["steps"]), hide_index=True, width="stretch")
        if after is not None:  # the compressed model as a bundle and as ONNX (a preview records no numbers)
            take_home.offer(current, "take_x", after if stage == "full" else None)
    pending = st.session_state.get(POLLED)
    if pending and fragment_run() and not st.session_state.get(ARMED) and not jobs_watched() \
            and request_pending() is False:
        waited = state.wait_for_stage(*pending, interrupted=lambda: request_pending() is not False,
                                      timeout_s=STAGE_WAIT_S)
        if waited == state.READY:
            st.rerun(scope="fragment")  # the workbench alone, showing the next stage
        if waited == state.INTERRUPTED:
            return  # the next move (or a stop) runs now; its own run waits for its stages
    if (st.session_state.get(POLLED) or jobs_watched()) and not st.session_state.get(ARMED) and fragment_run():
        st.rerun()  # a later stage or a job started by this slider move or button: the page once, starting the poller


workbench()

_polled = bool(st.session_state.get(POLLED)) or jobs_watched()
st.session_state[ARMED] = _polled


# a pending stage is polled every 0.25 s (it is due within seconds; half a poll is waited on average), a job's
# progress every 0.5 s; each poll is one cheap fragment run (a dictionary lookup unless something changed)
@st.fragment(run_every=(0.25 if st.session_state.get(POLLED) else 0.5) if _polled else None)
def poll_stage() -> None:
    """Polls the background measurements of the move the workbench shows and the jobs its panels show; a full rerun
    shows the next stage when it is ready, or a job's progress, or its result (and, once the whole test set is shown
    and no job is waited on, the page runs without this poller)."""
    polled = st.session_state.get(POLLED)
    if polled and state.newer_stage(*polled):
        st.rerun()
    if fragment_run() and jobs_changed():  # (on a full run the workbench has just drawn the job panels)
        st.rerun()


if _polled:
    with poll_slot:
        poll_stage()
