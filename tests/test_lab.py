"""The widgets live: a real JupyterLab on localhost, chapter 01 run in Chromium, a slider moved by the keyboard.

The server runs on a free 127.0.0.1 port with a token, in a temporary folder holding a copy of the notebook
(outputs and saved widget state cleared, so every widget on the page is a live one); the repository's
notebooks are never touched. After "Run All Cells", a logit slider of the LogitExplorer is moved and the loss
and gradient the widget shows must become what lossbook computes for the new slider values, to the printed
precision. Every request that leaves localhost is refused and fails the test.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
import torch
from _browser import ARTIFACTS, Guard, require_browser
from conftest import require

import lossbook

ROOT = Path(__file__).resolve().parent.parent
CHAPTER = ROOT / "notebooks" / "01_cross_entropy.ipynb"
SERVER_START_S = 120
RUN_ALL_S = 480  # the whole chapter, training demo included, on a busy 2-core machine
UPDATE_MS = 60_000
# JupyterLab settings for the test: every cell in the DOM (no windowing), the notebook's kernel started without
# asking, no news or update checks
SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none", "autoStartDefault": True},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                         "checkForUpdates": False},
}

# the server fetches no news and checks for no updates (nothing leaves the machine)
SERVER_CONFIG = {"LabApp": {"news_url": None, "check_for_updates_class": "jupyterlab.NeverCheckForUpdate"}}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status


def expected_shown(logits: list[float], target: int) -> tuple[str, list[str]]:
    """The loss and gradient LogitExplorer must show for these slider values, as lossbook computes and prints them."""
    z = torch.tensor([logits], dtype=torch.float64, requires_grad=True)  # [1, classes]
    loss = lossbook.fixed_cross_entropy(z, torch.tensor([target]))  # []
    loss.backward()
    return f"{loss.item():.4f}", [f"{g:+.4f}" for g in z.grad[0].tolist()]


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on 127.0.0.1 serving a temporary copy of chapter 01; yields (base URL, token)."""
    require("jupyterlab", "needed for the live widget test")
    nb = nbformat.read(CHAPTER, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.metadata.pop("widgets", None)
    work = tmp_path / "notebooks"
    work.mkdir()
    nbformat.write(nb, work / CHAPTER.name)
    for name, value in SETTINGS.items():
        path = tmp_path / "settings" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "jupyter_server_config.json").write_text(json.dumps(SERVER_CONFIG))
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"), "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "IPYTHONDIR": str(tmp_path / "ipython"),
           "LOSSBOOK_DEVICE": os.environ.get("LOSSBOOK_DEVICE", "cpu")}
    port, token = _free_port(), secrets.token_hex(16)
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            try:
                if _get(f"{base}/api/status?token={token}") == 200:
                    break
            except OSError:
                pass
            assert server.poll() is None, f"jupyter lab exited:\n{(tmp_path / 'server.log').read_text()[-4000:]}"
            assert time.monotonic() < deadline, "jupyter lab did not start in time"
            time.sleep(0.5)
        yield base, token, work
    finally:
        try:  # a clean shutdown: the server stops its kernels and exits
            request = urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST")
            urllib.request.urlopen(request, timeout=10).close()
            server.wait(timeout=60)
        except Exception:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
        log.close()
    assert server.returncode is not None
    assert nbformat.read(CHAPTER, as_version=4).cells[0].source == nb.cells[0].source  # ours is untouched


def _kernel_ready(base: str, token: str) -> bool:
    """The notebook's session has a kernel that the page is connected to and that is idle."""
    with urllib.request.urlopen(f"{base}/api/sessions?token={token}", timeout=5) as response:
        sessions = json.load(response)
    return any(s["path"].endswith(CHAPTER.name) and s["kernel"]["execution_state"] == "idle"
               and s["kernel"].get("connections", 0) >= 1 for s in sessions)


def _explorer_state(explorer):
    """(slider values as the readouts show them, target index, loss shown, gradients shown)."""
    def texts(selector):
        return explorer.locator(selector).evaluate_all("els => els.map(e => e.textContent)")

    readouts = [float(t.replace("\u2212", "-")) for t in texts(".widget-readout")]  # the readout's minus is U+2212
    target = explorer.locator("select").evaluate("s => s.selectedIndex")
    loss = texts(".lossbook-loss")[0]
    rows = texts("table tr")[1:]  # header left out
    grads = [re.findall(r"[+-]\d+\.\d{4}", row)[-1] for row in rows]
    return readouts, target, loss, grads


def test_moving_a_logit_slider_updates_loss_and_gradient_to_lossbooks_values(lab, browser):
    base, token, work = lab
    expect = require_browser().expect
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    guard = Guard(context)
    page = context.new_page()
    page.set_default_timeout(UPDATE_MS)
    try:
        page.goto(f"{base}/lab/tree/{CHAPTER.name}?token={token}")
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
        dialog = page.locator(".jp-Dialog", has_text="Select Kernel")
        if dialog.count():  # should not come up with autoStartDefault; accept the notebook's own kernel if it does
            dialog.locator(".jp-mod-accept").click()

        deadline = time.monotonic() + 120  # the kernel is started, connected and idle before anything runs
        while not _kernel_ready(base, token):
            assert time.monotonic() < deadline, "the notebook's kernel did not come up"
            page.wait_for_timeout(500)
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']")

        page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-item:has(> .lm-Menu-itemLabel:text-is('Run All Cells'))").click()
        started = time.perf_counter()
        prompts = page.locator(".jp-CodeCell .jp-InputPrompt")
        errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']")
        while True:  # every code cell numbered, or an error, or out of time
            shown = prompts.evaluate_all("els => els.map(e => e.textContent)")  # innerText is '' off screen
            if (shown and all(re.search(r"\[\d+\]", p) for p in shown)) or errors.count():
                break
            assert time.perf_counter() - started < RUN_ALL_S, f"the chapter did not finish running: {shown}"
            page.wait_for_timeout(2000)
        print(f"chapter 01 ran in JupyterLab in {time.perf_counter() - started:.1f} s", flush=True)
        assert errors.count() == 0, errors.all_inner_texts()

        explorer = (
            page.locator(".jp-OutputArea-output")
            .filter(has=page.locator(".widget-label", has_text=re.compile(r"^z0$")))
            .filter(has=page.locator(".lossbook-loss"))
            .first
        )
        explorer.locator(".lossbook-loss").wait_for()
        explorer.scroll_into_view_if_needed()
        logits, target, loss, grads = _explorer_state(explorer)
        assert len(logits) >= 2 and (loss, grads) == expected_shown(logits, target), "before the slider moves"

        handle = explorer.locator(".widget-hslider").nth(1).locator(".noUi-handle")
        handle.focus()
        for _ in range(7):  # 7 steps of 0.1 up, through the keyboard as a reader would
            handle.press("ArrowRight")
        moved = [*logits]
        moved[1] = round(logits[1] + 0.7, 10)
        expected_loss, expected_grads = expected_shown(moved, target)
        assert expected_loss != loss, "the test must move the loss to a new value"
        # the kernel computes, the widget re-renders its HTML (a new element each time) with the new loss
        expect(explorer.locator(".lossbook-loss")).to_have_text(expected_loss, timeout=UPDATE_MS)
        logits_now, target_now, loss_now, grads_now = _explorer_state(explorer)
        assert logits_now == pytest.approx(moved) and target_now == target
        assert (loss_now, grads_now) == (expected_loss, expected_grads)
        assert (loss_now, grads_now) != expected_shown(logits, target), "a stale widget would fail this check"
        assert (loss_now, grads_now) != (f"{float(expected_loss) + 1e-4:.4f}", expected_grads)

        folder = ARTIFACTS / "screenshots"
        folder.mkdir(parents=True, exist_ok=True)
        explorer.screenshot(path=str(folder / "lab__01_cross_entropy__logit_explorer.png"))
        guard.assert_clean("JupyterLab")
    except BaseException:
        folder = ARTIFACTS / "screenshots"
        folder.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(folder / "lab__failure.png"))
        raise
    finally:
        context.close()


def test_lab_sh_roots_jupyterlab_at_the_repository_and_opens_chapter_00():
    """`bash scripts/lab.sh` serves the whole repository (links to notebooks/... and the lossbook/ source work
    inside Lab) and its default page is chapter 00. Run for real, without a browser, on a free local port."""
    require("jupyterlab", "the README's lab command starts JupyterLab")
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(ROOT / "tests" / "artifacts" / "lab-sh-config"))
    server = subprocess.Popen(
        ["bash", str(ROOT / "scripts" / "lab.sh"), "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
         f"--IdentityProvider.token={token}", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + SERVER_START_S
        while True:
            try:
                _get(f"{base}/api/status?token={token}")
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, "lab.sh did not start JupyterLab"
                time.sleep(1)
        with urllib.request.urlopen(f"{base}/api/contents?token={token}", timeout=10) as response:
            top = {item["name"] for item in json.load(response)["content"]}
        assert {"notebooks", "lossbook", "README.md"} <= top, top  # the repository, not notebooks/
        assert _get(f"{base}/api/contents/lossbook/reward.py?token={token}") == 200
        request = urllib.request.Request(f"{base}/?token={token}")
        with urllib.request.urlopen(request, timeout=10) as response:  # follows the redirect to the default URL
            assert response.url.split("?")[0] == f"{base}/lab/tree/notebooks/00_how_to_read_this_book.ipynb"
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
