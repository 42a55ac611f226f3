"""Figures built once per process and served as finished data (``figure``, ``Ready``)."""

from __future__ import annotations

import json
from typing import Any, Callable

import plotly.graph_objects as go
import streamlit as st

from .lru import LRU


class Ready(go.Figure):
    """A figure already turned into plain data. ``st.plotly_chart`` calls ``to_dict()`` on a plotly Figure and
    trusts it: no second validation pass (which cost more than building the figure), and no copy of plotly's
    7 KB default template in every chart's message (the page's "streamlit" theme styles the chart)."""

    def __init__(self, d: dict) -> None:  # noqa: D107 - deliberately no plotly validation
        self._ready_dict = d

    def to_dict(self) -> dict:
        return self._ready_dict


def _plain(fig) -> dict:
    d = fig.to_dict()
    d.get("layout", {}).pop("template", None)
    return d


@st.cache_resource(show_spinner=False)
def _figures() -> LRU:
    return LRU(size=256)


def figure(name: str, key: tuple, build: Callable[[], Any]):
    """The figure ``name`` for ``key`` (a tuple of strings and numbers naming its inputs), built by ``build()`` once
    per process and served as finished data afterwards: moving a slider back to a value already seen, or a chart
    that did not change (the baseline's), costs nothing to rebuild."""
    k = json.dumps([name, *key], default=str)
    hit = _figures().get(k)
    if hit is None:
        hit = (_plain(build()), 0.0)
        _figures().put(k, hit)
    return Ready(hit[0])
