"""Debian's Chromium, headless, driven by Playwright, with every request leaving localhost refused and recorded.

Playwright's own browser download does not work on this project's machines, so the browser is the system's
(`apt-get install chromium`; LOSSBOOK_CHROMIUM points elsewhere). Without it, or without the playwright
package, the browser tests skip with the reason; under LOSSBOOK_STRICT=1 (CI) that skip is a failure.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import re
import shutil
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

CHROMIUM = os.environ.get("LOSSBOOK_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# as root in a container Chromium needs --no-sandbox; the rest keep it from calling home at start-up
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update", "--disable-default-apps",
                 "--disable-dev-shm-usage"]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
# every URL but localhost's and the browser's own (data:, blob:, file:, about:); matched inside Playwright, so
# local requests go straight through (intercepting them all stalls JupyterLab's kernel connection)
NON_LOCAL = re.compile(r"^(?!(?:https?|wss?)://(?:127\.0\.0\.1|localhost|\[::1\])(?::\d+)?(?:[/?#]|$)"
                       r"|(?:data|blob|file|about):)")
LOCAL_SCHEMES = {"data", "blob", "about", "file"}
_GUARDS: dict = {}  # id(page) -> the Guard watching it, so that visit() can tell it the test navigates
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def require_browser():
    """The playwright module, or a skip naming what is missing and how to get it."""
    try:
        from playwright import sync_api
    except ImportError as err:
        pytest.skip(f"playwright is not installed ({err}); browser tests need it: bash scripts/setup.sh")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"Chromium is not installed ({CHROMIUM} not found); browser tests need Debian's chromium: "
                    "sudo apt-get install -y chromium (or set LOSSBOOK_CHROMIUM to a Chromium binary)")
    return sync_api


def is_local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in LOCAL_SCHEMES or (parts.scheme in ("http", "https", "ws", "wss")
                                              and parts.hostname in LOCAL_HOSTS)


class Guard:
    """Refuses every request that leaves localhost and records it, with failed requests and console errors.

    Every request whose URL is not localhost's is routed here and aborted (the browser never sends it);
    every failed request, HTTP error status, console error and uncaught page error is recorded too.

    Attach it to a browser context before opening a page; `problems` lists what went wrong and
    `assert_clean()` fails with that list.
    """

    def __init__(self, context, allow_console=()):
        self.problems: list[str] = []
        self.allow_console = tuple(allow_console)
        self.in_flight: set = set()  # requests sent and not yet finished or failed
        self.left_behind: set = set()  # requests still in flight when the test itself navigated away
        context.route(NON_LOCAL, self._route)
        context.on("page", self.watch)
        for page in context.pages:
            self.watch(page)

    def _route(self, route):
        url = route.request.url
        if is_local(url):  # cannot happen with NON_LOCAL; kept so a wrong pattern cannot block the book
            route.continue_()
        else:
            self.problems.append(f"request leaving localhost (refused): {url}")
            route.abort("blockedbyclient")

    def watch(self, page):
        page.on("console", self._console)
        page.on("pageerror", lambda err: self.problems.append(f"uncaught page error: {err}"))
        page.on("request", lambda request: self.in_flight.add(request))
        page.on("requestfinished", lambda request: self.in_flight.discard(request))
        page.on("requestfailed", self._failed)
        page.on("response", self._response)
        _GUARDS[id(page)] = self

    def leave(self):
        """The test is about to navigate: requests still in flight will be aborted by the browser because of
        that (a late favicon, a font), not because the page failed; those aborts are not recorded."""
        self.left_behind |= self.in_flight

    def _console(self, message):
        if message.type == "error" and not any(a in message.text for a in self.allow_console):
            self.problems.append(f"console error: {message.text} at {message.location.get('url')}")

    def _failed(self, request):
        self.in_flight.discard(request)
        if request in self.left_behind and "ERR_ABORTED" in (request.failure or ""):
            return  # aborted because the test navigated away (see leave), not a failure of the page
        if is_local(request.url):  # the refused ones are recorded by _route already
            self.problems.append(f"failed request: {request.url} ({request.failure})")

    def _response(self, response):
        if response.status >= 400:
            self.problems.append(f"HTTP {response.status}: {response.url}")

    def assert_clean(self, what: str = "the page"):
        assert not self.problems, f"{what}:\n  " + "\n  ".join(self.problems)


SETTLE_MS = 90_000  # how long visit() waits for a page's network to settle


def visit(page, url: str):
    """Go to ``url`` and wait until the page's network is idle (no request for 500 ms), then return the response.

    ``page.goto`` returns at the ``load`` event, when a font, the favicon or a script's late fetch may still be in
    flight; going on to the next page would then abort them (``net::ERR_ABORTED``), which the guard rightly
    records as failed requests.  Waiting for the network to settle removes most of that race; Chromium still asks
    for the favicon lazily, after the network has settled, so the guard is told that the test is leaving
    (``Guard.leave``): requests of the old page that are then aborted (``ERR_ABORTED``) are not failures.  A
    request that fails on its own (an HTTP error, a refused connection, an abort the test did not cause) still
    fails.
    """
    guard = _GUARDS.get(id(page))
    if guard is not None:
        guard.leave()  # a late request of the page being left (Chromium asks for the favicon after load) is aborted
    response = page.goto(url)
    try:
        page.wait_for_load_state("networkidle", timeout=SETTLE_MS)
    except Exception as error:  # playwright's TimeoutError: say what was still loading, if anything
        pending = (sorted(r.url for r in guard.in_flight - guard.left_behind) if guard is not None
                   else ["(no guard: cannot tell)"])
        if pending:
            raise AssertionError(f"{url}: the network did not settle in {SETTLE_MS / 1000:.0f} s; still in "
                                 f"flight: {pending}") from error
        # Nothing of this page is in flight (every request finished or failed, and the guard judges those):
        # the idle event was missed, e.g. under heavy load, which is not a fault of the page.
    return response


@contextlib.contextmanager
def launch():
    """A headless Debian Chromium (skips when it or playwright is missing)."""
    sync_api = require_browser()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _SlowHandler(_QuietHandler):
    """Answers paths listed in ``slow`` only after ``delay`` seconds (for the browser checks' self-tests)."""

    slow: tuple[str, ...] = ()
    delay = 0.0

    def do_GET(self):
        if self.path.split("?")[0] in self.slow:
            time.sleep(self.delay)
        super().do_GET()


@contextlib.contextmanager
def serve(directory: Path, slow: tuple[str, ...] = (), delay: float = 0.0):
    """Serve a folder on 127.0.0.1 (a free port) in a thread; yields the base URL, ending in '/'.

    ``slow`` paths (e.g. ``("/late.txt",)``) are answered after ``delay`` seconds."""
    handler_class = type("Handler", (_SlowHandler,), {"slow": tuple(slow), "delay": delay})
    handler = functools.partial(handler_class, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# Text of the page that the reader sees as prose, with code, rendered math, widgets and scripts left out: any
# TeX left in it was not rendered.
PROSE_JS = """(root) => {
  const clone = (root || document.body).cloneNode(true);
  clone.querySelectorAll('pre, code, script, style, mjx-container, mjx-assistive-mml, .widget-subarea, '
      + '.cell_input, .highlight, .MathJax_Preview').forEach(e => e.remove());
  return clone.textContent;
}"""
RAW_TEX = r"(\\[a-zA-Z]+\b|\\[(\[]|\$[^$\s][^$]*\$)"
