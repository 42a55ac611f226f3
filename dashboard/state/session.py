"""The session's history: this browser's configurations (kept in the store so they survive a reload, plus the
current unsaved one), their latency timings, labels, and the Experiments page's tables of them."""

from __future__ import annotations

import streamlit as st

import store  # dashboard/store: history and settings in the database

from .recipes import recipe_key
from .workloads import label


def history() -> list[dict]:
    """This browser's kept configurations (saved and applied: from the store, so they survive a reload) and the
    current unsaved one, oldest first."""
    if "history" not in st.session_state:
        st.session_state["history"] = store.load_history()
    return st.session_state["history"]


def record(ref: str, label_: str, recipe: dict | None, stats: dict, how: str = "preview") -> dict:
    """Add a configuration to the history once per distinct recipe; returns its row. ``how``: "preview" (the current
    configuration: it replaces the previous unsaved row, so slider moves do not pile up), "applied" (trained,
    imported, timed) or "saved" ("Save to history"): those are written to the store. Baselines are always kept."""
    how = "applied" if recipe is None and how == "preview" else how
    key = recipe_key(recipe) if recipe is not None else f"baseline:{ref}"
    rows = history()
    for row in rows:
        if row["key"] == key:
            if how != "preview" and row.get("how") not in (how, "saved"):
                store.keep(row, how)
            return row
    row = {
        "id": max((r["id"] for r in rows), default=0) + 1, "key": key, "model": label(ref), "ref": ref, "label": label_,
        "baseline": recipe is None, "metric": stats.get("metric", "accuracy"),
        "higher_is_better": bool(stats.get("higher_is_better", True)), "percent": stats.get("metric_percent"),
        "accuracy": stats["accuracy"], "size_bytes": stats["size_bytes"],
        "sparse_size_bytes": stats.get("sparse_size_bytes"), "theoretical_size_bytes": stats.get("theoretical_size_bytes"),
        "simulated": bool(stats.get("simulated")), "nonzero_params": stats["nonzero_params"], "params": stats["params"],
        "smallest_bytes": smallest_bytes(stats), "recipe": recipe, "latency": [],
        # the same numbers in the units the store's CSV export and the Class page read
        "accuracy_%": stats["accuracy"] * 100, "size_KB": stats["size_bytes"] / 1024,
        "sparse_KB": None if stats.get("sparse_size_bytes") is None else stats["sparse_size_bytes"] / 1024,
        "theoretical_KB": None if stats.get("theoretical_size_bytes") is None else stats["theoretical_size_bytes"] / 1024,
        "best_KB": smallest_bytes(stats) / 1024, "latency_ms": None,
        # peak inference RAM at batch 1 (compression_core.peak_ram): the Class page's RAM constraint reads it
        "peak_ram_KB": None if stats.get("peak_ram_bytes_b1") is None else stats["peak_ram_bytes_b1"] / 1024,
    }
    rows[:] = [r for r in rows if r.get("how") != "preview"]  # one unsaved row: the current configuration
    rows.append(row)
    store.keep(row, how)
    del rows[:-200]
    return row


def record_latency(ref: str, recipe: dict, stats: dict, comparison: dict) -> None:
    """Add one latency comparison to a configuration's row, with the conditions it was measured under (batch,
    threads, runtime, rounds): a later measurement is added beside it, never written over it."""
    row = record(ref, describe(recipe["steps"]), recipe, stats, how="applied")
    row["latency"].append({k: comparison[k] for k in (
        "runtime", "batch_size", "threads", "rounds", "before_ms", "before_low_ms", "before_high_ms", "after_ms",
        "after_low_ms", "after_high_ms", "ratio", "ratio_low", "ratio_high", "verdict")})
    row["latency_ms"] = comparison["after_ms"]  # the latest (kept for exports; every timing stays in "latency")
    store.keep(row, row["how"])  # the timing goes into the stored row too


def smallest_bytes(stats: dict) -> int:
    """The smallest real (or theoretical, if simulated) size of a result in bytes: what the size chart plots."""
    return min([stats["size_bytes"]] + [stats[k] for k in ("sparse_size_bytes", "theoretical_size_bytes") if stats.get(k)])


def describe(steps: list[dict]) -> str:
    """A short label of a configuration for the history table."""
    if not steps:
        return "baseline"
    parts = []
    for s in steps:
        extra = [f"{k}={v}" for k, v in s.items()
                 if k not in ("kind", "targets", "overrides") and v is not None and (k, v) != ("include_classifier", False)]
        if s.get("targets"):
            extra.append(f"{len(s['targets'])} layers")
        if s.get("overrides"):
            extra.append(f"{len(s['overrides'])} overrides")
        parts.append(s["kind"] + (f"({', '.join(extra)})" if extra else ""))
    return " + ".join(parts)


# ------------------------------------------------------------------------------------------------ experiments
def experiments_frame(rows: list[dict]):
    """One row per configuration, numbers rounded for people, sizes and the metric also as changes relative to the
    configuration's own model's baseline (so models of very different sizes compare on one chart). ``change_pt``
    is positive when better: points for a higher-is-better metric, percent lower for a lower-is-better one
    (perplexity 20 -> 19 is +5.0), so one Pareto front (up is better) holds for every model."""
    import pandas as pd

    base = {r["ref"]: r for r in rows if r["baseline"]}
    out = []
    for r in rows:
        b = base.get(r["ref"], r)
        pct = r.get("percent")
        if pct is None:  # rows kept before the unit was recorded
            pct = r["metric"] in ("accuracy", "agreement") or 0 <= r["accuracy"] <= 1
        scale = 100 if pct else 1
        up = r.get("higher_is_better", True)
        change = (r["accuracy"] - b["accuracy"]) * scale if up else \
            (b["accuracy"] - r["accuracy"]) / max(abs(b["accuracy"]), 1e-12) * 100
        lat = r["latency"][-1] if r["latency"] else None
        out.append({
            "id": r["id"], "model": r["model"], "label": r["label"], "baseline": r["baseline"],
            "simulated": r["simulated"], "metric": r["metric"],
            "value": round(r["accuracy"] * scale, 2),
            "change_pt": round(change, 2),
            "size_kb": round(r["size_bytes"] / 1024, 1),
            "sparse_kb": None if r["sparse_size_bytes"] is None else round(r["sparse_size_bytes"] / 1024, 1),
            "simulated_kb": None if r["theoretical_size_bytes"] is None else round(r["theoretical_size_bytes"] / 1024, 1),
            "size_ratio": round(r["smallest_bytes"] / b["smallest_bytes"] if r["baseline"] else
                                r["smallest_bytes"] / b["size_bytes"], 3),
            "nonzero_params": int(r["nonzero_params"]), "params": int(r["params"]),
            "latency_ratio": None if lat is None else round(lat["ratio"], 3),
            "latency_ratio_low": None if lat is None else round(lat["ratio_low"], 3),
            "latency_ratio_high": None if lat is None else round(lat["ratio_high"], 3),
            "latency_verdict": None if lat is None else lat["verdict"],
            "timings": len(r["latency"]),
        })
    df = pd.DataFrame(out)
    if len(df):  # every baseline sits at (1, 0) on both charts
        df.loc[df["baseline"], ["size_ratio", "latency_ratio"]] = 1.0
        df.loc[df["baseline"], "change_pt"] = 0.0
    return df


def latency_frame(rows: list[dict]):
    """One row per latency comparison ever timed (a later one never overwrites an earlier one), with the
    conditions it was timed under."""
    import pandas as pd

    out = []
    for r in rows:
        for i, c in enumerate(r["latency"], 1):
            out.append({"id": r["id"], "model": r["model"], "label": r["label"], "timing": i, "runtime": c["runtime"],
                        "batch": c["batch_size"], "threads": c["threads"], "rounds": c["rounds"],
                        "before_ms": round(c["before_ms"], 4), "after_ms": round(c["after_ms"], 4),
                        "ratio": round(c["ratio"], 3), "ratio_range": f"{c['ratio_low']:.2f}-{c['ratio_high']:.2f}",
                        "verdict": c["verdict"]})
    return pd.DataFrame(out)


FIELD_LABELS = {  # what the side-by-side table calls each field
    "model": "model", "label": "configuration", "metric": "metric", "value": "metric value (% or raw)",
    "change_pt": "change vs its baseline (points)", "size_kb": "dense file (KB)", "sparse_kb": "sparse file (KB)",
    "simulated_kb": "simulated size (KB)", "size_ratio": "smallest size (x of baseline)",
    "nonzero_params": "non-zero parameters", "params": "parameters", "latency_ratio": "latency (x of baseline)",
    "latency_verdict": "latency verdict", "simulated": "simulated (not a real file)",
}
