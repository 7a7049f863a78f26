"""The book's browser assets, served from the book itself: MathJax, RequireJS and the ipywidgets HTML manager.

Jupyter Book 1 (Sphinx + myst-nb) would load these from CDNs (cdn.jsdelivr.net, cdnjs.cloudflare.com). Here
they come from the npm registry as pinned tarballs, checked against the registry's sha512 integrity, cached in
book/_vendor/npm/ (git-ignored) and unpacked into book/_vendor/static/, which book/_config.yml makes the book's
html_static_path, so the built book serves them from its own _static/ folder.

    python book/vendor.py          # fetch what is missing (set-up does this), then unpack
    python book/vendor.py --offline  # unpack from the cache only; fail if something is missing

The one change made to third-party code: CDN addresses are rewritten to local paths that do not exist. The
ipywidgets HTML manager falls back to cdn.jsdelivr.net for widget modules it does not bundle (every widget in
this book uses the core modules, which it bundles), MathJax's accessibility extension would fetch speech rules
from it, and the manager's CSS keeps a commented-out Google Fonts import. A widget from a third-party module
would therefore show up as a failed (local) request in the browser tests, never as a silent fetch from the
internet, and no file of the built book names a CDN (book/build.py checks every file).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import shutil
import sys
import tarfile
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = HERE / "_vendor" / "npm"
STATIC = HERE / "_vendor" / "static"
REGISTRY = "https://registry.npmjs.org"

# name, version, sha512 integrity as the npm registry publishes it (`npm view NAME@VERSION dist.integrity`)
PACKAGES = {
    "mathjax": (
        "3.2.2",
        "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==",
    ),
    "requirejs": (
        "2.3.8",
        "sha512-7/cTSLOdYkNBNJcDMWf+luFvMriVm7eYxp4BcFCsAX0wF421Vyce5SXP17c+Jd5otXKGNehIonFlyQXSowL6Mw==",
    ),
    # the html manager of ipywidgets 8 (its bundled @jupyter-widgets/controls speaks the 2.0.0 model version)
    "@jupyter-widgets/html-manager": (
        "1.0.15",
        "sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA==",
    ),
}
WIDGETS_CDN = b'"https://cdn.jsdelivr.net/npm/"'
WIDGETS_LOCAL = b'"./jupyter-widgets-modules-are-not-bundled/"'
# every other CDN address in the vendored files (MathJax's speech-rule defaults, a commented-out font import)
CDN_REWRITES = {
    b"https://cdn.jsdelivr.net/npm/": b"./not-vendored/",
    b"https://fonts.googleapis.com/css?family=Roboto+Mono": b"./not-vendored/roboto-mono.css",
}
PATCH_LEVEL = 2  # bump when the rewriting changes, so an existing unpacked copy is redone
# MathJax: the TeX -> CommonHTML component and what it loads at run time (TeX extensions, fonts, menu, a11y)
MATHJAX_KEEP = ("tex-chtml.js", "input/", "output/chtml", "output/chtml.js", "ui/", "a11y/", "sre/", "adaptors/")


def _tarball_name(name: str, version: str) -> str:
    return f"{name.replace('@', '').replace('/', '-')}-{version}.tgz"


def _url(name: str, version: str) -> str:
    return f"{REGISTRY}/{name}/-/{name.split('/')[-1]}-{version}.tgz"


def _check(data: bytes, integrity: str) -> bool:
    algo, _, digest = integrity.partition("-")
    return base64.b64encode(hashlib.new(algo, data).digest()).decode() == digest


def tarball(name: str, offline: bool) -> bytes:
    """The package's tarball from the cache, fetched from the npm registry when missing (unless offline)."""
    version, integrity = PACKAGES[name]
    path = CACHE / _tarball_name(name, version)
    if path.exists() and _check(path.read_bytes(), integrity):
        return path.read_bytes()
    if offline:
        raise SystemExit(f"book assets: {path} is missing and --offline was given; run `bash scripts/setup.sh`")
    print(f"book assets: fetching {name}@{version} from the npm registry", flush=True)
    try:
        with urllib.request.urlopen(_url(name, version), timeout=120) as response:
            data = response.read()
    except OSError as err:
        raise SystemExit(f"book assets: cannot fetch {_url(name, version)} ({err}); the first set-up needs the "
                         "npm registry, later builds run offline from book/_vendor/") from None
    if not _check(data, integrity):
        raise SystemExit(f"book assets: {name}@{version} does not match its registry integrity {integrity}")
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def _members(data: bytes):
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            if member.isfile():
                yield member.name.split("/", 1)[1], tar.extractfile(member).read()  # drop the "package/" prefix


def _write(path: Path, data: bytes) -> None:
    if path.suffix in (".js", ".css", ".json", ".html"):
        for cdn, local in CDN_REWRITES.items():
            data = data.replace(cdn, local)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def unpack(offline: bool = False) -> Path:
    """Fill book/_vendor/static/ (mathjax/, requirejs/, html-manager/) and return it."""
    stamp = STATIC / "versions.json"
    wanted = json.dumps({"packages": PACKAGES, "patch": PATCH_LEVEL}, sort_keys=True)
    data = {name: tarball(name, offline) for name in PACKAGES}  # checks the cache even when unpacked already
    if stamp.exists() and stamp.read_text() == wanted:
        return STATIC
    shutil.rmtree(STATIC, ignore_errors=True)
    for path, content in _members(data["mathjax"]):
        if path.startswith("es5/") and path[4:].startswith(MATHJAX_KEEP):
            _write(STATIC / "mathjax" / path[4:], content)
    for path, content in _members(data["requirejs"]):
        if path == "require.js":
            _write(STATIC / "requirejs" / "require.js", content)
    for path, content in _members(data["@jupyter-widgets/html-manager"]):
        if path == "dist/embed-amd.js":
            assert content.count(WIDGETS_CDN) >= 1, "html-manager: the CDN fallback to patch has moved"
            content = content.replace(WIDGETS_CDN, WIDGETS_LOCAL)
        if path.startswith("dist/") and not path.endswith((".map", "embed.js", "libembed-amd.js")):
            _write(STATIC / "html-manager" / path[5:], content)
    for name, (version, _) in PACKAGES.items():  # the licences travel with the files
        for path, content in _members(data[name]):
            if path.upper().startswith("LICENSE"):
                _write(STATIC / "licenses" / f"{_tarball_name(name, version)[:-4]}-{path}", content)
    stamp.write_text(wanted)
    return STATIC


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--offline", action="store_true", help="use the cache only (no network)")
    args = parser.parse_args(argv)
    static = unpack(offline=args.offline)
    files = [p for p in static.rglob("*") if p.is_file()]
    print(f"book assets: {len(files)} files in {static.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
