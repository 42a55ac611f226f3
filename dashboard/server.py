"""Compression Lab's server: ``streamlit run dashboard/server.py [-- --workload REF --db URL --teacher-code CODE]``.

Streamlit finds the module-level ``app = st.App(...)`` below and serves it with uvicorn; the script arguments after
``--`` reach ``sys.argv`` as with ``streamlit run dashboard/app.py`` (``sys.argv = [this file, *args]``), so every
``--flag`` the pages read works the same. What this adds to ``app.py`` (which stays the router):

- ``IdentityCookie``: each browser gets a server-issued secret in an HttpOnly cookie (``store/identity.py``); the
  pages key history, settings and submissions by its hash. Nothing in a URL identifies anyone.
- At start, one teacher link is printed on this console (and nowhere else):
  ``http://HOST:PORT/classroom?teacher=TOKEN``. Opening it gives that browser teacher rights on the Class page
  without the passcode; it works once (12 hours at most), so no student can use it after the teacher, and no
  student can lock it the way wrong passcodes pause the passcode form. Each server start prints a new one.

``streamlit run dashboard/app.py`` still works (no cookie: each browser tab is its own identity for its session,
and nothing is kept across reloads); a class server runs this file.
"""

from __future__ import annotations

import sys
from contextlib import asynccontextmanager
from pathlib import Path

import streamlit as st
from starlette.middleware import Middleware
from streamlit.runtime.pages_manager import PagesManager

HERE = Path(__file__).resolve().parent
for _p in ([HERE.parent] if (HERE.parent / "pyproject.toml").is_file() else []) + [HERE]:
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from store.identity import IdentityCookie  # noqa: E402  (after the path set-up above)


def _teacher_link() -> str:
    """A new one-time teacher link for this server's address (the token is stored hashed in the database)."""
    from streamlit import config

    import store

    token = store.get_store().new_teacher_link()
    host = config.get_option("browser.serverAddress") or config.get_option("server.address") or "localhost"
    if host in ("0.0.0.0", "::"):  # serving every interface: the link for a browser on this machine
        host = "127.0.0.1"
    port = config.get_option("server.port")
    base = (config.get_option("server.baseUrlPath") or "").strip("/")
    return f"http://{host}:{port}/{base + '/' if base else ''}classroom?teacher={token}"


@asynccontextmanager
async def _lifespan(_app):
    try:
        link = _teacher_link()
    except Exception as e:  # the dashboard serves students even if the link cannot be made
        print(f"  Teacher link: not available ({type(e).__name__}: {' '.join(str(e).split())[:160]}); use "
              "--teacher-code", flush=True)
    else:
        print(f"  Teacher link (works once, in the browser that opens it; keep it off the projector):\n  {link}\n",
              flush=True)
    yield


def _chart_chunks() -> list[str]:
    """Streamlit's lazily loaded chart bundle(s) the first page needs (plotly: ~4.7 MB), by their hashed names."""
    static = Path(st.__file__).resolve().parent / "static" / "static" / "js"
    return sorted(p.name for p in static.glob("PlotlyChart.*.js"))


class PreloadCharts:
    """ASGI middleware: the app's HTML page asks the browser to fetch and compile the plotly chart bundle at once
    (``<link rel="modulepreload">``, as Streamlit's own page does for its core bundles), instead of after the
    websocket opened and the first chart element arrived: the first chart of a page load no longer waits for a
    4.7 MB download and its compilation in series. Other responses pass through untouched."""

    def __init__(self, app) -> None:
        self.app = app
        self.links = "".join(f'<link rel="modulepreload" crossorigin href="./static/js/{n}">'
                             for n in _chart_chunks()).encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope.get("type") != "http" or scope.get("method") != "GET" or not self.links:
            await self.app(scope, receive, send)
            return
        start: dict = {}
        body: list[bytes] = []

        async def buffered(message) -> None:
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers") or [])
                if not headers.get(b"content-type", b"").startswith(b"text/html"):
                    start["pass"] = True
                    await send(message)
                    return
                start["message"] = message
                return
            if start.get("pass"):
                await send(message)
                return
            body.append(message.get("body", b""))
            if message.get("more_body"):
                return
            html = b"".join(body).replace(b"</head>", self.links + b"</head>", 1)
            headers = [(k, v) for k, v in start["message"].get("headers") or [] if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(html)).encode()))
            await send({**start["message"], "headers": headers})
            await send({"type": "http.response.body", "body": html})

        await self.app(scope, receive, buffered)


def _no_pages_directory_navigation() -> None:
    """Route every URL through ``app.py``'s ``st.navigation`` (its sections), never Streamlit's automatic page list.

    Streamlit still treats a ``pages/`` folder beside the main script as a version-1 multipage app until the first
    run that calls ``st.navigation``: a first visit to ``/recipe`` or ``/search`` after a start ran that page file
    alone, without ``app.py`` (no sections, no trust banner, no restored settings), and every deep link did so until
    someone opened ``/``. The flag is Streamlit's own switch (``st.navigation`` clears it on its first call;
    streamlit is pinned in requirements.txt); tests/test_browser_walk.py opens deep links on a fresh server."""
    PagesManager.uses_pages_directory = False


_no_pages_directory_navigation()
app = st.App(str(HERE / "app.py"), middleware=[Middleware(IdentityCookie), Middleware(PreloadCharts)],
             lifespan=_lifespan)
