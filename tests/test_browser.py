"""JupyterLab, where analysts work: run 04_five_year_baseline through the UI in headless Chromium.

A JupyterLab server is started on loopback with a random token, in a temporary
folder holding a copy of the notebook (figure 6 on fewer scenes, so the run is
quick) and a link to the synthetic sample. Debian's Chromium, driven by
Playwright, opens the notebook, runs all cells from the Run menu, waits for
the kernel, and checks that the figures render and no cell raised. The server
and the browser are always shut down.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
NOTEBOOK = "04_five_year_baseline"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RUN_TIMEOUT_S = 600


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lab_copy(repo_root: Path, sample: Path, root: Path) -> Path:
    """A copy of the notebook whose parameters keep the UI run short; data beside it."""
    nb = json.loads((repo_root / "notebooks" / f"{NOTEBOOK}.ipynb").read_text())
    for cell in nb["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            src = "".join(cell["source"])
            src = src.replace("resolutions_m = [0.5, 1.0, 3.0]", "resolutions_m = [0.5, 3.0]")
            src = src.replace("resolution_every = 2", "resolution_every = 4")
            cell["source"] = src
    (root / "notebooks").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "data" / "sample").symlink_to(sample, target_is_directory=True)
    path = root / "notebooks" / f"{NOTEBOOK}.ipynb"
    path.write_text(json.dumps(nb, indent=1))
    # render every cell (JupyterLab 4 otherwise renders only the cells in view)
    settings = root / ".jupyter" / "lab" / "user-settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    return path


@pytest.fixture(scope="module")
def lab(default_sample, repo_root, tmp_path_factory):
    """A JupyterLab server on loopback in a temporary root; stopped afterwards."""
    root = tmp_path_factory.mktemp("lab")
    nb_path = _lab_copy(repo_root, Path(default_sample.path), root)
    n_code = sum(c["cell_type"] == "code" for c in json.loads(nb_path.read_text())["cells"])
    port = _free_port()
    token = secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env["JUPYTER_CONFIG_DIR"] = str(root / ".jupyter")  # no user settings leak in
    env["JUPYTER_RUNTIME_DIR"] = str(root / ".jupyter" / "runtime")
    env["JUPYTERLAB_SETTINGS_DIR"] = str(root / ".jupyter" / "lab" / "user-settings")
    env["JUPYTERLAB_WORKSPACES_DIR"] = str(root / ".jupyter" / "lab" / "workspaces")
    jupyter = Path(sys.executable).with_name("jupyter")
    log = open(root / "server.log", "w")  # noqa: SIM115 - closed in the finally below
    cmd = [
        str(jupyter),
        "lab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.port_retries=0",
        "--LabApp.news_url=",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # CI containers run as root
    proc = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"JupyterLab exited with status {proc.returncode}: "
                    + (root / "server.log").read_text()[-2000:]
                )
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail("JupyterLab did not answer within 90 s on " + base)
            time.sleep(0.5)
        yield {"base": base, "token": token, "root": root, "n_code": n_code}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the server and the kernels it started
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} not found: the browser test drives Debian's chromium package; "
            "install it with `apt-get install -y chromium` (.ci/run does)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def _wait_for_idle_kernel(lab, *, timeout_s: float) -> None:
    """Wait until the notebook's session has a kernel that reports idle (REST API)."""
    deadline = time.monotonic() + timeout_s
    url = f"{lab['base']}/api/sessions?token={lab['token']}"
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url, timeout=5) as r:
            sessions = json.loads(r.read())
        if any(s.get("kernel", {}).get("execution_state") == "idle" for s in sessions):
            return
        time.sleep(1)
    pytest.fail(f"no idle kernel for the notebook after {timeout_s:.0f} s: {sessions}")


def _prompts(page) -> list[str]:
    return page.locator(".jp-Notebook .jp-CodeCell .jp-InputPrompt").all_inner_texts()


def test_run_all_cells_of_the_baseline_notebook_in_jupyterlab(lab, browser, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.set_default_timeout(60_000)
        url = f"{lab['base']}/lab/tree/notebooks/{NOTEBOOK}.ipynb?token={lab['token']}"
        page.goto(url)
        page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for()
        _wait_for_idle_kernel(lab, timeout_s=120)
        n_code = lab["n_code"]
        page.locator(".jp-Notebook .jp-CodeCell").nth(n_code - 1).wait_for()
        assert page.locator(".jp-Notebook .jp-CodeCell").count() == n_code
        for _attempt in range(3):
            page.locator(".jp-Notebook .jp-Cell").first.click()  # the notebook is the active panel
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-item", has_text="Run All Cells").first.click()
            try:  # started when a prompt shows a number or a star
                page.wait_for_function(
                    "() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]"
                    ".some(e => /\\[(\\*|\\d+)\\]/.test(e.textContent))",
                    timeout=30_000,
                )
                break
            except PlaywrightTimeout:
                page.keyboard.press("Escape")
        else:
            pytest.fail(f"Run > Run All Cells started nothing: {_prompts(page)}")
        # done when every code cell shows an execution number and none is queued or running
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while True:
            prompts = _prompts(page)
            done = len(prompts) == n_code and all(
                p.strip().startswith("[") and p.strip()[1:-2].strip().isdigit() for p in prompts
            )
            if done:
                break
            errors = page.locator(".jp-OutputArea-output[data-mime-type*='error']").count()
            if errors or time.monotonic() > deadline:
                break
            time.sleep(2)
        page.wait_for_timeout(1500)  # let the last outputs render
        page.screenshot(path=str(tmp_path / "lab.png"), full_page=False)
        tracebacks = page.locator(
            '.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]',
            has_text="Traceback",
        ).count()
        error_outputs = page.locator(".jp-OutputArea-output[data-mime-type*='error']").count()
        assert tracebacks == 0 and error_outputs == 0, "a cell raised:\n" + "\n".join(
            page.locator(".jp-OutputArea-output").all_inner_texts()[-3:]
        )
        assert done, f"cells still running after {RUN_TIMEOUT_S} s: {_prompts(page)}"
        images = page.locator(".jp-OutputArea-output img")
        assert images.count() >= 6  # the six report figures, at least
        sizes = images.evaluate_all("els => els.map(e => [e.naturalWidth, e.naturalHeight])")
        assert all(w > 200 and h > 150 for w, h in sizes), sizes  # decoded, not broken
        from PIL import Image

        with Image.open(tmp_path / "lab.png") as shot:
            assert shot.size == (1400, 1000)
        assert (tmp_path / "lab.png").stat().st_size > 50_000
        for name in ("fig1_yard_detections", "fig3_five_year_counts", "fig6_estimated_vs_true"):
            assert (lab["root"] / "figures" / f"{name}.png").exists(), name
    finally:
        page.close()
