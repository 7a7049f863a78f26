"""The built book, in a real browser: what a reader sees is what the notebooks promise, with no network.

The book is built (incrementally) into book/_build/html by book/build.py, the same build as
`bash scripts/book.sh`, served on 127.0.0.1 and opened in Debian's Chromium, headless. Every request that
leaves localhost is refused and fails the test, as does any failed request or console error. The chapters
come from book/_toc.yml, so a chapter added there is tested here. A screenshot of every page goes to
tests/artifacts/screenshots/ (git-ignored).
"""

from __future__ import annotations

import importlib.util
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import nbformat
import pytest
import yaml
from _browser import ARTIFACTS, PROSE_JS, RAW_TEX, Guard, serve, visit
from conftest import require

ROOT = Path(__file__).resolve().parent.parent
TOC = ROOT / "book" / "_toc.yml"
STATE = "application/vnd.jupyter.widget-state+json"
VIEW = "application/vnd.jupyter.widget-view+json"
IMAGES = ("image/png", "image/jpeg", "image/svg+xml", "image/gif")
# A bound on waiting, not a check: on the 2-core machine under a load average of 9 (a clean-clone run beside four
# other jobs) two pages took over 60 s to settle (MathJax typesetting, widget state); quiet, they take seconds.
TIMEOUT_MS = 180_000


def toc_files(toc: dict) -> list[str]:
    """The book's pages in reading order: the root, then every chapter and section, in parts or not."""
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))
            walk(entry.get("chapters"))

    walk(toc.get("parts"))
    walk(toc.get("chapters"))
    return files


PAGES = toc_files(yaml.safe_load(TOC.read_text()))
CHAPTERS = [f for f in PAGES if (ROOT / f"{f}.ipynb").exists()]


def _load_build():
    spec = importlib.util.spec_from_file_location("lossbook_book_build", ROOT / "book" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- what each notebook promises ------------------------------------------------------------------------------


def _models(state: dict, model_id: str, seen: set) -> None:
    """Collect model_id and every model it references (children, layouts...) into seen."""
    if model_id in seen or model_id not in state:
        return
    seen.add(model_id)
    refs = re.findall(r"IPY_MODEL_([0-9a-f]+)", str(state[model_id].get("state", {})))
    for ref in refs:
        _models(state, ref, seen)


def promises(chapter: str) -> dict:
    """What the stored notebook shows: widget views (and their state), images, math, and the losses widgets show."""
    nb = nbformat.read(ROOT / f"{chapter}.ipynb", as_version=4)
    state = nb.metadata.get("widgets", {}).get(STATE, {}).get("state", {})
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "data" in o]
    views = [o["data"][VIEW]["model_id"] for o in outputs if VIEW in o["data"]]
    shown: set = set()
    for view in views:
        _models(state, view, shown)
    losses = []
    for model_id in sorted(shown):
        value = state[model_id].get("state", {}).get("value")
        if isinstance(value, str):
            losses += re.findall(r'class="lossbook-loss">([^<]*)</', value)
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    return {
        "views": views,
        "views_without_state": [v for v in views if v not in state],
        "images": sum(1 for o in outputs if any(k in o["data"] for k in IMAGES)),
        "math": bool(re.search(r"\$|\\begin\{", markdown)) or any("text/latex" in o["data"] for o in outputs),
        "losses": sorted(losses),
        "intro": Path(chapter).name.startswith("00"),
    }


# --- fixtures -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def built_book() -> Path:
    """book/_build/html, brought up to date by the README's build (Sphinx rebuilds only what changed)."""
    require("jupyter_book", "needed to build the book (pip install -e '.[book]')")
    return _load_build().build()


@pytest.fixture(scope="session")
def book_url(built_book):
    with serve(built_book) as url:
        yield url


@pytest.fixture
def guarded(browser):
    """A fresh page whose every non-local request is refused; fails the test on any problem it saw."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    guard = Guard(context)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    yield page, guard
    context.close()


def _screenshot(page, name: str) -> None:
    folder = ARTIFACTS / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name.replace('/', '__')}.png"), full_page=True)


def _wait_for_math(page) -> None:
    page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise")
    page.evaluate("() => MathJax.startup.promise")


# --- the build ------------------------------------------------------------------------------------------------


def test_the_toc_lists_the_notebooks_in_chapter_order():
    assert CHAPTERS, "book/_toc.yml lists no notebook"
    assert CHAPTERS == sorted(CHAPTERS), CHAPTERS
    assert all(c.startswith("notebooks/") for c in CHAPTERS), "the book renders notebooks/ in place, not copies"


def test_the_build_is_offline_and_renders_the_notebooks_in_place(built_book):
    build = _load_build()
    assert build.offline_problems(built_book) == []
    for chapter in CHAPTERS:
        page = built_book / f"{chapter}.html"
        assert page.exists(), f"{chapter} was not built"
    config = (ROOT / "book" / "_config.yml").read_text()
    assert re.search(r'execute_notebooks:\s*"?off"?', config), "the book shows the stored outputs; it never executes"


def test_the_offline_check_catches_a_page_that_loads_from_a_cdn(tmp_path):
    build = _load_build()
    (tmp_path / "ok.html").write_text('<script src="_static/local.js"></script><a href="https://example.org">x</a>')
    assert build.offline_problems(tmp_path) == []
    (tmp_path / "page.html").write_text(
        '<html><head><script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js"></script>'
        '<link rel="stylesheet" href="//fonts.example.com/x.css"><style>@import "https://example.com/a.css";</style>'
        "</head><body><img src='http://example.com/a.png'></body></html>"
    )
    (tmp_path / "theme.css").write_text("/* url(https://ok.in.a.comment/x) */ a { background: url(https://e.com/b) }")
    (tmp_path / "_static").mkdir()
    (tmp_path / "_static" / "lib.js").write_text('var fallback = "https://unpkg.com/" + name;')
    problems = "\n".join(build.offline_problems(tmp_path))
    for needle in ("<script src> loads https://cdn.jsdelivr.net", "loads //fonts.example.com",
                   "CSS loads https://example.com/a.css", "<img src> loads http://example.com/a.png",
                   "names the CDN host cdn.jsdelivr.net", "theme.css: CSS loads https://e.com/b",
                   "_static/lib.js: names the CDN host unpkg.com"):
        assert needle in problems, problems
    assert "ok.in.a.comment" not in problems


def test_internal_links_resolve(built_book):
    """Every relative link of every built page (table of contents, prev/next, in-text) reaches a page and anchor."""

    class Links(HTMLParser):
        def __init__(self):
            super().__init__()
            self.ids, self.hrefs = set(), []

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if attrs.get("id"):
                self.ids.add(attrs["id"])
            if tag == "a" and attrs.get("name"):
                self.ids.add(attrs["name"])
            if tag == "a" and attrs.get("href"):
                self.hrefs.append(attrs["href"])

    pages = {}
    for path in built_book.rglob("*.html"):
        parser = Links()
        parser.feed(path.read_text(encoding="utf-8"))
        pages[path.resolve()] = parser
    broken = []
    for path, parser in pages.items():
        for href in parser.hrefs:
            parts = urlsplit(href)
            if parts.scheme or parts.netloc or href.startswith("javascript:"):
                continue
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{path.relative_to(built_book.resolve())}: {href} (no such file)")
            elif parts.fragment and target.suffix == ".html" and unquote(parts.fragment) not in pages[target].ids:
                broken.append(f"{path.relative_to(built_book.resolve())}: {href} (no such anchor)")
    assert not broken, "\n".join(broken)


# --- in the browser -------------------------------------------------------------------------------------------


def test_the_table_of_contents_lists_every_page_in_order_and_its_links_load(book_url, guarded):
    page, guard = guarded
    visit(page, book_url)  # index.html redirects to the root page
    page.wait_for_selector("nav.bd-docs-nav a.reference")
    links = page.eval_on_selector_all("nav.bd-docs-nav a.reference", "els => els.map(a => a.href)")
    expected = [urljoin(book_url, f"{p}.html") for p in PAGES]
    assert [link.split("#")[0] for link in links] == expected
    for link in links:
        url, _, fragment = link.partition("#")
        response = visit(page, url)  # waits for fonts and the favicon, so moving on aborts nothing
        assert response is not None and response.ok, link
        if fragment:
            assert page.locator(f"[id='{unquote(fragment)}']").count() == 1, link
        assert page.locator("article h1").count() >= 1, f"{link} has no title"
        for href in page.eval_on_selector_all("nav.bd-toc-nav a", "els => els.map(a => a.getAttribute('href'))"):
            assert href.startswith("#") and page.locator(f"[id='{unquote(href[1:])}']").count() == 1, (link, href)
    guard.assert_clean("the table of contents")


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_page_shows_math_widgets_and_plots_offline(chapter, book_url, guarded):
    promised = promises(chapter)
    assert not promised["views_without_state"], (
        f"{chapter} displays widgets whose state is not saved in the notebook (the book would show nothing): "
        "save the notebook with its widget state"
    )
    if not promised["intro"]:  # every chapter after the introduction shows a widget and a plot
        assert promised["views"], f"{chapter} has no widget output"
        assert promised["images"], f"{chapter} has no plot"
    page, guard = guarded
    response = page.goto(urljoin(book_url, f"{chapter}.html"))
    assert response is not None and response.ok
    page.wait_for_load_state("load")

    if promised["math"]:
        _wait_for_math(page)
        assert page.locator("mjx-container").count() > 0, "MathJax rendered no math"
    prose = page.evaluate(PROSE_JS, page.locator("article").element_handle())
    raw = re.findall(RAW_TEX, prose)
    assert not raw, f"TeX left unrendered on the page: {raw[:10]}"

    views = len(promised["views"])
    page.wait_for_function(
        """n => Array.from(document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]'))
                 .filter(s => s.previousElementSibling && s.previousElementSibling.querySelector('.jupyter-widgets'))
                 .length >= n""",
        arg=views,
    )
    rendered = page.evaluate(
        """() => Array.from(document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]'))
                 .map(s => { const area = s.previousElementSibling;
                             return !!(area && area.classList.contains('widget-subarea')
                                       && area.querySelector('.jupyter-widgets')
                                       && area.getBoundingClientRect().height > 0); })"""
    )
    assert rendered == [True] * views, f"widgets rendered from embedded state: {rendered}, expected {views}"
    shown = sorted(page.locator(".widget-subarea .lossbook-loss").all_inner_texts())
    assert shown == promised["losses"], "the losses the widgets show are not the ones in the notebook's widget state"

    images = page.eval_on_selector_all(
        ".cell_output img", "els => els.map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0])"
    )
    assert len(images) >= promised["images"], images
    assert all(ok for _, ok in images), f"images that did not load: {[src for src, ok in images if not ok]}"

    _screenshot(page, chapter)
    guard.assert_clean(chapter)


def test_the_browser_checks_fail_on_cdn_requests_failed_loads_console_errors_and_raw_tex(browser, tmp_path):
    """The guard and the raw-TeX check catch what they are meant to (so the tests above can fail)."""
    (tmp_path / "index.html").write_text(
        "<html><body><article><p>Loss is $-\\log p_y$ and \\(x\\).</p><pre>not $tex$ \\alpha in code</pre></article>"
        '<script src="https://cdn.jsdelivr.net/npm/requirejs@2.3.8/require.js"></script>'
        '<img src="missing.png"><script>console.error("boom")</script></body></html>'
    )
    context = browser.new_context()
    guard = Guard(context)
    page = context.new_page()
    with serve(tmp_path) as url:
        page.goto(url, wait_until="load")
        prose = page.evaluate(PROSE_JS, page.locator("article").element_handle())
    context.close()
    problems = "\n".join(guard.problems)
    assert "request leaving localhost (refused): https://cdn.jsdelivr.net/npm/requirejs" in problems, problems
    assert "missing.png" in problems and "console error: boom" in problems, problems
    with pytest.raises(AssertionError):
        guard.assert_clean()
    assert [m for m in re.findall(RAW_TEX, prose)] == ["$-\\log p_y$", "\\("]


def test_moving_on_before_the_network_settles_aborts_requests_and_visit_waits(browser, tmp_path):
    """The cause of a once-flaky table-of-contents test: a request still in flight when the page is left is
    aborted (net::ERR_ABORTED) and recorded as a failed request.  ``visit`` waits for the network to settle."""
    (tmp_path / "late.txt").write_text("late")
    (tmp_path / "first.html").write_text(
        "<html><body><p>first</p><script>addEventListener('load', () => fetch('late.txt'))</script></body></html>")
    (tmp_path / "second.html").write_text("<html><body><p>second</p></body></html>")
    outcomes = {}
    with serve(tmp_path, slow=("/late.txt",), delay=1.5) as url:
        for name, go in (("goto", lambda page, u: page.goto(u)), ("visit", visit)):
            context = browser.new_context()
            guard = Guard(context)
            page = context.new_page()
            go(page, url + "first.html")
            page.goto(url + "second.html")
            page.wait_for_load_state("networkidle")
            context.close()
            outcomes[name] = list(guard.problems)
    assert any("late.txt" in p and "ERR_ABORTED" in p for p in outcomes["goto"]), outcomes
    assert outcomes["visit"] == [], outcomes
    # an abort the test did not cause is still a failure: the page itself cancels a request it started
    (tmp_path / "cancel.html").write_text(
        "<html><body><script>const c = new AbortController(); fetch('late.txt', {signal: c.signal}).catch(() => 0);"
        "setTimeout(() => c.abort(), 200);</script></body></html>")
    with serve(tmp_path, slow=("/late.txt",), delay=1.5) as url:
        context = browser.new_context()
        guard = Guard(context)
        page = context.new_page()
        visit(page, url + "cancel.html")
        context.close()
    assert any("late.txt" in p and "ERR_ABORTED" in p for p in guard.problems), guard.problems


def test_visit_names_what_is_still_in_flight_when_the_network_does_not_settle(browser, tmp_path, monkeypatch):
    """``visit`` waits a bounded time for the network to settle; a page whose request is still in flight then fails
    with that request's URL (a hung request is a fault), while one with nothing in flight goes on."""
    import _browser

    monkeypatch.setattr(_browser, "SETTLE_MS", 700)
    (tmp_path / "late.txt").write_text("late")
    (tmp_path / "hangs.html").write_text(
        "<html><body><script>addEventListener('load', () => fetch('late.txt'))</script></body></html>")
    (tmp_path / "quiet.html").write_text("<html><body><p>quiet</p></body></html>")
    with serve(tmp_path, slow=("/late.txt",), delay=4.0) as url:
        context = browser.new_context()
        Guard(context)
        page = context.new_page()
        with pytest.raises(AssertionError, match=r"did not settle in 1 s; still in flight: \['.*late\.txt'\]"):
            _browser.visit(page, url + "hangs.html")
        page.wait_for_load_state("networkidle", timeout=20_000)  # let the slow request finish before leaving
        assert _browser.visit(page, url + "quiet.html").ok
        context.close()


def test_no_table_is_wider_than_the_reading_column(book_url, guarded):
    """Every table of every page fits the article's width at a laptop's 1280 px (long cells wrap; a table that
    cannot fit, such as an explorer's row of tokens, scrolls inside its own box), so no table runs past the
    reading column."""
    page, guard = guarded
    too_wide = []
    for name in PAGES:
        visit(page, urljoin(book_url, f"{name}.html"))
        too_wide += page.evaluate("""(name) => {
          const article = document.querySelector('article');
          const width = article.getBoundingClientRect().width;
          // what the reader sees of a table: its own box, or the box of the nearest element that scrolls it
          const visible = (t) => {
            for (let e = t; e && e !== article; e = e.parentElement) {
              if (['auto', 'scroll'].includes(getComputedStyle(e).overflowX)) return e.getBoundingClientRect();
            }
            return t.getBoundingClientRect();
          };
          const right = article.getBoundingClientRect().right + 1;
          const tables = [...article.querySelectorAll('table')];
          // prose tables (the README's chapter table, printed data frames) fit without sideways scrolling ...
          const prose = tables.filter(t => !t.closest('.widget-html-content'))
            .filter(t => t.getBoundingClientRect().right > right)
            .map(t => `${name}: a table ${Math.round(t.getBoundingClientRect().width)} px wide`
                      + ` in a ${Math.round(width)} px column (the reader must scroll it sideways)`);
          // ... and an explorer's table scrolls inside its widget, never past the column
          const widgets = tables.filter(t => t.closest('.widget-html-content'))
            .filter(t => visible(t).right > right)
            .map(t => `${name}: a widget's table runs ${Math.round(visible(t).width)} px past a`
                      + ` ${Math.round(width)} px column`);
          return prose.concat(widgets);
        }""", name)
    assert not too_wide, "\n".join(too_wide)
    guard.assert_clean("the tables")


def test_every_page_carries_its_favicon_inline(built_book):
    """No page asks the server for its icon (Chromium fetches a linked icon lazily, after load, and leaving the
    page aborts it): the icon is a data: URI in every page."""
    for name in PAGES:
        icons = re.findall(r'<link rel="icon" href="([^"]*)"', (built_book / f"{name}.html").read_text("utf-8"))
        assert icons and all(i.startswith("data:image/svg+xml;base64,") for i in icons), name
    for page in built_book.rglob("*.html"):  # nor does any other built page link the icon file
        assert not re.search(r'<link rel="icon" href="(?!data:)', page.read_text(encoding="utf-8")), page


def test_solutions_are_collapsed_behind_a_toggle(built_book):
    """Issue 24: a solution cell (tagged ``hide-input``) is built as a collapsed ``<details>`` the reader opens."""
    page = (built_book / "notebooks" / "00_how_to_read_this_book.html").read_text()
    assert page.count("tag_hide-input") >= 2, "chapter 00's two solution cells are not collapsed"
    solution = page.index("tag_hide-input")
    end = page.index("</details>", solution)
    assert "<details" in page[solution:end] and "my_logsumexp" in page[solution:end], "no toggle around the solution"

