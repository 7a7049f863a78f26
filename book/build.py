"""Build the HTML book from notebooks/ (their stored outputs; nothing is executed) and check it is offline.

    python book/build.py            # build into book/_build/html (incremental: Sphinx rebuilds what changed)
    python book/build.py --all      # rebuild every page
    python book/build.py --serve    # build, then serve the book on http://127.0.0.1:8000/ (--port to change)

scripts/book.sh runs this after set-up. The build needs no network once book/vendor.py has cached the browser
assets (set-up does that). Sphinx warnings are errors (-W -n): a broken cross-reference or a missing file
fails the build. After the build, every page is checked for a resource that would load from outside the book.
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.server
import re
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

BOOK = Path(__file__).resolve().parent
ROOT = BOOK.parent
sys.path.insert(0, str(BOOK))
import vendor  # noqa: E402

# hosts a page must never name: the CDNs Sphinx, myst-nb, ipywidgets and MathJax default to, and web fonts
CDN_HOSTS = re.compile(
    r"cdn\.jsdelivr\.net|unpkg\.com|cdnjs\.cloudflare\.com|fonts\.googleapis\.com|fonts\.gstatic\.com"
    r"|code\.jquery\.com|stackpath\.bootstrapcdn\.com|cdn\.plot\.ly|cdn\.bokeh\.org|polyfill\.io"
)
# (tag, attribute) pairs the browser loads by itself, without a click
LOADED = {("script", "src"), ("img", "src"), ("iframe", "src"), ("source", "src"), ("video", "src"),
          ("audio", "src"), ("embed", "src"), ("object", "data"), ("input", "src"), ("track", "src")}
LINK_LOADED = {"stylesheet", "icon", "shortcut", "preload", "modulepreload", "prefetch", "manifest", "apple-touch-icon"}
REMOTE = re.compile(r"^\s*(?:[a-zA-Z][a-zA-Z0-9+.-]*:)?//")  # http://, https://, protocol-relative //host
CSS_URL = re.compile(r"""(?:url\(\s*['"]?|@import\s+['"])([^'")\s]+)""")
CSS_COMMENT = re.compile(r"/\*.*?\*/", re.S)


class _Resources(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.loaded: list[tuple[str, str]] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for t, a in LOADED:
            if tag == t and attrs.get(a):
                self.loaded.append((f"<{tag} {a}>", attrs[a]))
        if tag == "link" and set((attrs.get("rel") or "").lower().split()) & LINK_LOADED and attrs.get("href"):
            self.loaded.append((f"<link rel={attrs.get('rel')}>", attrs["href"]))
        if attrs.get("style"):
            self.styles.append(attrs["style"])
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.styles.append(data)


def _css_problems(css: str, where: str) -> list[str]:
    return [f"{where}: CSS loads {url}" for url in CSS_URL.findall(CSS_COMMENT.sub("", css)) if REMOTE.match(url)]


def offline_problems(html_dir: Path) -> list[str]:
    """Everything in the built book that would make a browser reach beyond the book: empty when offline.

    Every HTML page: no resource it loads (script, stylesheet, image, icon, font, frame...) is remote, and no CDN
    host is named anywhere in it. Every CSS file: no remote url() or @import. No script, style or data file names
    a CDN host. (What JavaScript actually requests is checked in a browser: tests/test_book.py fails on any
    request that leaves localhost.)
    """
    html_dir = Path(html_dir)
    problems = []
    for page in sorted(html_dir.rglob("*.html")):
        where = str(page.relative_to(html_dir))
        text = page.read_text(encoding="utf-8", errors="replace")
        parser = _Resources()
        parser.feed(text)
        problems += [f"{where}: {what} loads {url}" for what, url in parser.loaded if REMOTE.match(url)]
        for style in parser.styles:
            problems += _css_problems(style, where)
        problems += [f"{where}: names the CDN host {m.group(0)}" for m in CDN_HOSTS.finditer(text)]
    for sheet in sorted(html_dir.rglob("*.css")):
        problems += _css_problems(sheet.read_text(encoding="utf-8", errors="replace"), str(sheet.relative_to(html_dir)))
    for other in sorted(html_dir.rglob("*")):  # scripts, styles, data: no file names a CDN, even unused
        if other.is_file() and other.suffix in (".js", ".css", ".json", ".txt", ".svg"):
            text = other.read_text(encoding="utf-8", errors="replace")
            where = str(other.relative_to(html_dir))
            problems += [f"{where}: names the CDN host {m.group(0)}" for m in CDN_HOSTS.finditer(text)]
    return problems


JUPYTER_BOOK = "import sys; from jupyter_book.cli.main import main; sys.argv[0] = 'jupyter-book'; sys.exit(main())"


STATIC_DIRS = [BOOK / "_static", vendor.STATIC]  # html_static_path in book/_config.yml


def _static_stale(html_dir: Path) -> bool:
    """True when a static file differs from its built copy: Sphinx copies static files only when a page changed."""
    for folder in STATIC_DIRS:
        for source in folder.rglob("*"):
            if source.is_file():
                built = html_dir / "_static" / source.relative_to(folder)
                if not built.exists() or built.stat().st_size != source.stat().st_size \
                        or built.read_bytes() != source.read_bytes():
                    return True
    return False


FAVICON_LINK = re.compile(r'<link rel="icon" href="[^"]*favicon\.svg"\s*/?>')


def inline_favicon(html_dir: Path) -> int:
    """Put the favicon into every page as a data: URI; returns the number of pages changed.

    Chromium fetches a page's icon lazily, after the page has loaded; moving to the next page then aborts that
    request (which made a browser test flaky). Inline, the icon costs no request at all."""
    data = base64.b64encode((BOOK / "favicon.svg").read_bytes()).decode()
    link = f'<link rel="icon" href="data:image/svg+xml;base64,{data}"/>'
    changed = 0
    for page in Path(html_dir).rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        new = FAVICON_LINK.sub(link, text)
        if new != text:
            page.write_text(new, encoding="utf-8")
            changed += 1
    return changed


def build(path_output: Path = BOOK, all_pages: bool = False, offline: bool = True) -> Path:
    """Build the book into path_output/_build/html and return that folder; raise if it fails or is not offline."""
    vendor.unpack(offline=offline)
    cmd = [sys.executable, "-c", JUPYTER_BOOK, "build", str(ROOT), "--config", "book/_config.yml",
           "--toc", "book/_toc.yml", "--path-output", str(path_output),
           "-W", "-n", "--keep-going"]
    if all_pages or _static_stale(Path(path_output) / "_build" / "html"):
        cmd.append("--all")
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the book build failed ({' '.join(cmd)}):\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}")
    html_dir = Path(path_output) / "_build" / "html"
    inline_favicon(html_dir)
    problems = offline_problems(html_dir)
    if problems:
        raise RuntimeError("the built book loads from outside itself:\n  " + "\n  ".join(problems))
    print(f"book: built {html_dir.relative_to(ROOT) if html_dir.is_relative_to(ROOT) else html_dir} "
          f"in {time.perf_counter() - start:.1f} s; no page loads anything from outside the book", flush=True)
    return html_dir


def serve(html_dir: Path, port: int) -> None:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(html_dir))
    with http.server.ThreadingHTTPServer(("127.0.0.1", port), handler) as server:
        print(f"book: serving {html_dir} on http://127.0.0.1:{server.server_port}/ (Ctrl-C to stop)", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="rebuild every page, not only what changed")
    parser.add_argument("--serve", action="store_true", help="serve the built book on localhost afterwards")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--fetch", action="store_true", help="fetch missing browser assets (set-up does this)")
    args = parser.parse_args(argv)
    try:
        html_dir = build(all_pages=args.all, offline=not args.fetch)
    except RuntimeError as err:
        print(err, file=sys.stderr)
        return 1
    print(f"book: open {html_dir / 'index.html'} or run `bash scripts/book.sh --serve`")
    if args.serve:
        serve(html_dir, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
