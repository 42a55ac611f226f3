"""Identities that cannot be taken: the identity cookie (server-issued, HttpOnly, never in a URL), what the database
keys rows by, and, in real browsers against `streamlit run dashboard/server.py`, that a second browser given the
first one's address sees none of its history, that the one-time teacher link works once, and that two dashboard
processes on one Postgres database serve a student's history on either port."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "dashboard"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import store  # noqa: E402
from browser_helpers import launch, skip_without_chromium, wait_idle  # noqa: E402
from db_backends import fresh_postgres_database, postgres_base  # noqa: E402


# ------------------------------------------------------------------------------------------------ the middleware
def _call(headers: list[tuple[bytes, bytes]], kind: str = "http", scheme: str = "http") -> list[bytes]:
    """The Set-Cookie headers ``IdentityCookie`` adds to a response for a request with ``headers``."""
    sent: list[dict] = []

    async def app(scope, receive, send) -> None:
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/html")]})
            await send({"type": "http.response.body", "body": b"ok"})

    async def send(message) -> None:
        sent.append(message)

    async def receive():
        return {"type": "http.request"}

    asyncio.run(store.IdentityCookie(app)({"type": kind, "scheme": scheme, "headers": headers}, receive, send))
    return [v for m in sent if m["type"] == "http.response.start" for k, v in m["headers"] if k == b"set-cookie"]


def test_a_request_without_the_cookie_gets_a_new_httponly_secret():
    got = _call([])
    assert len(got) == 1
    cookie = got[0].decode()
    name, secret = cookie.split(";")[0].split("=", 1)
    assert name == store.COOKIE and store.valid_secret(secret) and len(secret) >= 43  # token_urlsafe(32): 256 bits
    attrs = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
    assert {"httponly", "path", "samesite", "max-age"} <= attrs and "SameSite=Lax" in cookie and "Path=/" in cookie
    assert "secure" not in attrs and "Secure" in _call([], scheme="https")[0].decode()
    assert _call([])[0] != got[0]  # a new secret each time


def test_a_valid_cookie_is_kept_and_a_forged_short_one_replaced():
    secret = store.new_secret()
    assert _call([(b"cookie", f"other=1; {store.COOKIE}={secret}".encode())]) == []
    assert len(_call([(b"cookie", f"{store.COOKIE}=alice".encode())])) == 1  # not one of ours: a new one
    assert len(_call([(b"cookie", b"\xff\xfe garbage;;==")])) == 1
    # another app on the same host set an odd cookie (JSON with spaces): ours is still found
    assert _call([(b"cookie", f'prefs={{"a": 1, "b": 2}}; {store.COOKIE}={secret}'.encode())]) == []
    assert _call([], kind="websocket") == []  # the handshake passes through; the page reads the cookie


def test_browser_keys_are_one_way_and_never_an_old_id():
    secret = store.new_secret()
    key = store.browser_key(secret)
    assert key == store.browser_key(secret) and key != store.browser_key(store.new_secret())
    assert secret not in key and store.valid_browser_id(key) and re.fullmatch(r"k[0-9a-f]{40}", key)
    assert store.client_key("10.1.2.3") == "ip:10.1.2.3" and store.client_key(None) == "ip:unknown"
    assert store.client_key("::ffff:10.1.2.3") == "ip:10.1.2.3"
    assert store.client_key("2001:db8::1") == store.client_key("2001:db8::2") == "ip:2001:db8::/64"


# ------------------------------------------------------------------------------------------------ real browsers
class Server:
    """`streamlit run dashboard/server.py` on a free port, its console read in the background (the teacher link)."""

    def __init__(self, tmp_path: Path, app_args: list[str], env: dict | None = None) -> None:
        import subprocess

        from benchmarks.local_app import free_port, streamlit_argv, wait_healthy

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.lines: list[str] = []
        self.proc = subprocess.Popen([sys.executable, "-m", "streamlit", *streamlit_argv(self.port), "--", *app_args],
                                     cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, "COMPRESSION_LAB_DB": str(tmp_path / "h.db"), **(env or {})})
        threading.Thread(target=self._read, daemon=True).start()
        try:
            wait_healthy(self.port, self.proc, 120)
        except Exception:
            self.stop()
            raise

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def teacher_link(self) -> str:
        found = [m.group(0) for line in self.lines for m in re.finditer(r"http://\S+/classroom\?teacher=\S+", line)]
        assert found, "".join(self.lines)[-2000:]
        return found[-1]

    def stop(self) -> None:
        from benchmarks.local_app import stop

        stop(self.proc)


def _browser(p):
    skip_without_chromium()
    return launch(p)


def _idle(page) -> None:
    wait_idle(page, 0, timeout_ms=90_000)


def _save_a_pruned_row(page, url: str) -> None:
    """On the Explore page: unstructured pruning, the slider moved, 'Save to history'."""
    page.goto(url)
    page.locator(".js-plotly-plot").first.wait_for(timeout=120_000)
    _idle(page)
    page.get_by_text("unstructured (weights)", exact=True).click()
    _idle(page)
    slider = page.locator('[data-testid="stSlider"] input[type="range"]').first
    slider.wait_for(state="attached", timeout=60_000)
    slider.focus()
    for _ in range(6):
        page.keyboard.press("ArrowRight")
    _idle(page)
    page.get_by_role("button", name="Save to history").click()
    page.get_by_text("Saved as row").wait_for(timeout=60_000)


def _wait_for_the_row(page) -> None:
    """The saved row is in the history (the Experiments page's table and row picker)."""
    page.get_by_text("Your history").wait_for(timeout=120_000)
    page.get_by_text("prune_unstructured", exact=False).first.wait_for(state="attached", timeout=60_000)


def _identity_cookie(context) -> dict:
    mine = [c for c in context.cookies() if c["name"] == store.COOKIE]
    assert len(mine) == 1, context.cookies()
    return mine[0]


@pytest.mark.browser
@pytest.mark.slow
def test_second_browser_with_the_first_ones_address_sees_none_of_its_history(tmp_path):
    """Student A saves a row; the cookie is HttpOnly (not in ``document.cookie``), its secret in no URL or page; a
    reload keeps A's history; a second browser context opening A's address (and an old-style ``?u=`` link) sees none
    of it. The teacher's one-time link from the console opens teacher mode once; a second browser given the same
    link gets nothing."""
    from playwright.sync_api import sync_playwright

    server = Server(tmp_path, ["--teacher-code", "not-on-the-console"])
    try:
        with sync_playwright() as p:
            b = _browser(p)
            a_ctx = b.new_context(viewport={"width": 1400, "height": 1000})
            a = a_ctx.new_page()
            _save_a_pruned_row(a, server.url)
            cookie = _identity_cookie(a_ctx)
            secret = cookie["value"]
            assert cookie["httpOnly"] is True and cookie["sameSite"] == "Lax" and cookie["path"] == "/"
            assert store.COOKIE not in a.evaluate("document.cookie") and secret not in a.evaluate("document.cookie")
            assert secret not in a.url and "u=" not in a.url
            a.get_by_role("link", name="Experiments").click()
            _wait_for_the_row(a)
            address = a.url
            assert secret not in a.content() and store.browser_key(secret) not in a.content()
            a.reload()  # F5: the same history
            _wait_for_the_row(a)

            b_ctx = b.new_context(viewport={"width": 1400, "height": 1000})
            other = b_ctx.new_page()
            for where in (address, server.url + "/experiments?u=" + store.browser_key(secret)):
                other.goto(where)
                other.get_by_text("No experiments yet").wait_for(timeout=120_000)
                _idle(other)
                assert other.get_by_text("prune_unstructured", exact=False).count() == 0
                assert "u=" not in other.url
            assert _identity_cookie(b_ctx)["value"] != secret

            link = server.teacher_link()
            teacher = b.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            teacher.goto(link)
            teacher.get_by_text("Teacher mode opened with the server's one-time link").wait_for(timeout=120_000)
            assert "teacher=" not in teacher.url
            teacher.reload()  # the rights belong to the teacher's browser (its cookie), not to the link
            teacher.get_by_text("No challenge yet").wait_for(timeout=120_000)
            _idle(teacher)
            assert teacher.get_by_role("button", name="Set challenge (starts a new, empty board)").count() == 1
            late = b.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            late.goto(link)
            late.get_by_text("used already").wait_for(timeout=120_000)
            assert late.get_by_role("button", name="Set challenge (starts a new, empty board)").count() == 0
            b.close()
        log = "".join(server.lines)
        assert secret not in log and store.browser_key(secret) not in log
    finally:
        server.stop()


@pytest.mark.browser
@pytest.mark.slow
def test_two_processes_on_one_postgres_serve_a_students_history_on_either_port(tmp_path):
    """Two dashboard processes on two ports, one Postgres database: cookies belong to the host, not the port, so
    the student's browser sends the same identity to both; a row saved on one is in the history on the other."""
    from playwright.sync_api import sync_playwright

    with fresh_postgres_database(postgres_base()) as url:
        one = Server(tmp_path, ["--db", url])
        try:
            two = Server(tmp_path, ["--db", url])
        except Exception:
            one.stop()
            raise
        try:
            with sync_playwright() as p:
                b = _browser(p)
                ctx = b.new_context(viewport={"width": 1400, "height": 1000})
                page = ctx.new_page()
                _save_a_pruned_row(page, one.url)
                secret = _identity_cookie(ctx)["value"]
                page.goto(two.url + "/experiments")  # a reload against the other process
                _wait_for_the_row(page)
                assert _identity_cookie(ctx)["value"] == secret  # the same cookie reached both ports
                b.close()
        finally:
            one.stop()
            two.stop()


@pytest.mark.slow
def test_workshop_load_two_processes_on_one_postgres_reload_on_the_other(tmp_path):
    """``benchmarks.workshop_load --processes 2 --db URL``: websocket students with the identity cookie, each reloading
    against the other process at the end, find their own last configuration there; nothing errs or leaks."""
    from benchmarks import workshop_load

    with fresh_postgres_database(postgres_base()) as url:
        r = workshop_load.run(sessions=2, duration=2.0, think=0.5, models=["digits-mlp"], processes=2, db_url=url)
    assert r["identity_cookies"] == 2 and r["processes"] == 2 and "postgresql" in r["database"]
    assert r["errors"] == 0 and r["leaks"] == 0, (r["error_samples"], r["leak_samples"])
    assert r["reloads_checked"] == 2 and r["reload_mismatches"] == 0, r["reload_samples"]
    assert r["server_tracebacks"] == 0, r["traceback_sample"]
