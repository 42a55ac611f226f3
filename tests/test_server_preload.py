"""dashboard/server.py's PreloadCharts: the HTML page gains one modulepreload link per chart bundle that exists in
the installed Streamlit (its content-length fixed); JavaScript, other responses and websockets pass untouched."""

from __future__ import annotations

import asyncio
from pathlib import Path

from dashboard_modules import dashboard_module


def _serve(middleware_cls, content_type: bytes, body: bytes, scope_type: str = "http") -> tuple[dict, bytes]:
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]})
        half = len(body) // 2
        await send({"type": "http.response.body", "body": body[:half], "more_body": True})
        await send({"type": "http.response.body", "body": body[half:]})

    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    asyncio.run(middleware_cls(app)({"type": scope_type, "method": "GET", "path": "/"}, None, send))
    head = next(m for m in sent if m["type"] == "http.response.start")
    return dict(head["headers"]), b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def test_the_page_preloads_the_chart_bundle_that_exists():
    server = dashboard_module("server")
    chunks = server._chart_chunks()
    assert chunks and all(n.startswith("PlotlyChart.") and n.endswith(".js") for n in chunks)
    js = Path(server.st.__file__).resolve().parent / "static" / "static" / "js"
    assert all((js / n).is_file() for n in chunks)  # a link to a real file, whatever the Streamlit version
    html = b"<html><head><title>x</title></head><body></body></html>"
    headers, body = _serve(server.PreloadCharts, b"text/html; charset=utf-8", html)
    assert body.count(b'rel="modulepreload"') == len(chunks) and body.index(b"modulepreload") < body.index(b"</head>")
    assert int(headers[b"content-length"]) == len(body)


def test_other_responses_pass_untouched():
    server = dashboard_module("server")
    js = b"export const x = '</head>';" * 10
    headers, body = _serve(server.PreloadCharts, b"application/javascript", js)
    assert body == js and int(headers[b"content-length"]) == len(js)
