"""The class room's rules: the teacher's passcode (``--teacher-code``, compared in constant time), the challenge's
wording, the size a history row competes with, and the leaderboard's ranking."""

from __future__ import annotations

import csv
import hmac
import io
from datetime import datetime

from .schema import server_flag


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
# a lower-is-better metric (perplexity: the challenge's ``higher_is_better`` is False), in its own units
LOWER_KINDS = {
    "max_size": "lowest {metric} under {limit:g} KB",
    "min_metric": "smallest file with {metric} at most {limit:g}",
}


def higher_is_better(ch: dict) -> bool:
    """The challenge metric's direction (challenges set before directions were stored: higher is better)."""
    return bool(ch.get("higher_is_better", True))


def metric_value(ch: dict, accuracy: float) -> float:
    """A metric value in the challenge's display units: percent for fractions, else the number (perplexity)."""
    return accuracy * 100 if ch.get("percent", True) else accuracy


def metric_shown(ch: dict, accuracy: float) -> str:
    return f"{accuracy * 100:.2f} %" if ch.get("percent", True) else f"{accuracy:.4g}"


def challenge_text(ch: dict) -> str:
    kinds = CHALLENGE_KINDS if higher_is_better(ch) else LOWER_KINDS
    what = kinds.get(ch.get("kind", "max_size"), kinds["max_size"])
    ram = max_ram_kb(ch)
    return what.format(metric=ch.get("metric", "accuracy"), limit=float(ch.get("limit", 0))) + \
        (f", peak RAM at most {ram:g} KB" if ram is not None else "") + f" on {ch.get('model', '?')}"


def max_ram_kb(ch: dict | None) -> float | None:
    """The challenge's peak-RAM limit in KB (inference at batch 1: weights + input + live activations), or None."""
    v = (ch or {}).get("max_ram_kb")
    return float(v) if v else None


def ram_ok(ch: dict, peak_ram_kb: float | None) -> bool:
    """True when a submission's peak RAM is within the challenge's limit (always, without a limit); a submission
    with no peak-RAM figure does not meet a limit it cannot show it meets."""
    limit = max_ram_kb(ch)
    return limit is None or (peak_ram_kb is not None and float(peak_ram_kb) <= limit + 1e-9)


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


def qualifies(ch: dict, accuracy: float, size_kb: float, peak_ram_kb: float | None = None) -> bool:
    """Whether a submission meets the challenge: its goal's limit, and the peak-RAM limit when there is one."""
    if not ram_ok(ch, peak_ram_kb):
        return False
    if ch.get("kind", "max_size") == "max_size":
        return size_kb <= float(ch["limit"]) + 1e-9
    if not higher_is_better(ch):  # "perplexity at most <limit>"
        return metric_value(ch, accuracy) <= float(ch["limit"]) + 1e-9
    return metric_value(ch, accuracy) >= float(ch["limit"]) - 1e-9


def leaderboard(ch: dict | None, subs: list[dict]) -> list[dict]:
    """One line per student (browser): their best submission, ranked (1 = best) among those meeting the constraint;
    the others follow with rank None. "max_size": better metric first (then smaller, then earlier);
    "min_metric": smaller size first (then better metric, then earlier). Better: higher, or lower for a
    lower-is-better metric (perplexity)."""
    if not ch:
        return []
    size_first = ch.get("kind", "max_size") == "min_metric"
    sign = -1 if higher_is_better(ch) else 1

    def order(s: dict) -> tuple:
        ok = qualifies(ch, s["accuracy"], s["size_kb"], s.get("peak_ram_kb"))
        main = (s["size_kb"], sign * s["accuracy"]) if size_first else (sign * s["accuracy"], s["size_kb"])
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
        ok = qualifies(ch, s["accuracy"], s["size_kb"], s.get("peak_ram_kb"))
        if ok:
            rank += 1
        out.append({**s, "display_name": latest_name[s["browser"]], "qualifies": ok, "rank": rank if ok else None})
    return out


SUBMISSION_COLUMNS = ("id", "display_name", "accuracy", "size_kb", "peak_ram_kb", "meets_constraint", "label", "model",
                      "simulated", "created")


def iso_time(t: float | None) -> str:
    """A stored Unix time as ISO 8601 in the server's time zone, to the second, with its UTC offset
    (``2026-03-02T14:05:09+01:00``); "" when missing."""
    if t is None:
        return ""
    return datetime.fromtimestamp(float(t)).astimezone().isoformat(timespec="seconds")


def submissions_csv(ch: dict | None, subs: list[dict]) -> str:
    """Every submission (``Store.submissions()``: all rows, oldest first) as CSV text: accuracy as a fraction, size
    in KB, whether it meets the challenge's constraint, ``created`` in ISO 8601. No browser ids; a student's
    text that a spreadsheet would run as a formula is quoted."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(SUBMISSION_COLUMNS), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for s in subs:
        ok = qualifies(ch, s["accuracy"], s["size_kb"], s.get("peak_ram_kb")) if ch else None
        row = {k: _cell(s.get(k)) for k in SUBMISSION_COLUMNS}
        w.writerow({**row, "meets_constraint": "" if ok is None else ("yes" if ok else "no"),
                    "simulated": "yes" if s.get("simulated") else "no", "created": iso_time(s.get("created"))})
    return buf.getvalue()


def _cell(v):
    """A student's text as a spreadsheet shows it, never as a formula (``=``, ``+``, ``-``, ``@`` lead: quoted)."""
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + v
    return v
