"""What the browser tests share: one private JupyterLab server for all of them, Debian's Chromium through
Playwright, a time budget, and the console errors that are not ours.

Starting the server once for the session saves its start per test; each test opens its own notebook, and its
kernels are shut down when it ends (the `lab` fixture in conftest.py), so no fit of one test runs into the next.
Notebook 7 gets a server of its own (`jupyter notebook`, as its users start it): a `jupyter lab` server serves
Notebook 7's pages too, but once it has served a /lab/tree page, Notebook 7's page config carries JupyterLab's
`treePath` and the page fails on a file-browser command it does not have.
Needs Debian's Chromium at /usr/bin/chromium (or $JL_CHROMIUM), the `playwright` package (its bundled browsers are
not used), `jupyterlab` and, for the Notebook 7 test, `notebook`; `.ci/install-browser` installs them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = os.environ.get("JL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]

# Console errors that are not ours, each with why it is harmless. (None were seen on the reference machine; they
# are what an offline JupyterLab may log.)
IGNORED_CONSOLE = [
    # The news / update check of JupyterLab's notification plugin (disabled in the settings below, but a
    # first start may still try): it fetches from jupyter.org, unreachable offline.
    (re.compile(r"/lab/api/news|jupyter\.org"), "JupyterLab news and update check: no internet here"),
    # The extension manager lists extensions from PyPI when its panel initialises.
    (re.compile(r"/lab/api/extensions|pypi\.org"), "extension manager listing from PyPI: no internet here"),
    # Browsers ask for a favicon on their own; a missing one is not a page error.
    (re.compile(r"favicon"), "the browser's own favicon request"),
    # The quick-start notebook's first cell is a Markdown line of Colab and Binder badges: images on the internet.
    (re.compile(r"ERR_NAME_NOT_RESOLVED \((https://colab\.research\.google\.com/assets/colab-badge\.svg|"
                r"https://mybinder\.org/badge_logo\.svg)\)"), "the quick-start's badge images: no internet here"),
    # Notebook 7.6's keyboard-shortcut settings handler (in its own notebook_core bundle) reads the schema of a
    # plugin it does not hold when another plugin's settings load; seen on opening a one-cell notebook that never
    # ran, so before any code of ours, and never in JupyterLab.
    (re.compile(r"pageerror: Cannot read properties of undefined \(reading 'schema'\) at \S+/static/notebook/"
                r"notebook_core\.\w+\.js"), "Notebook 7's shortcut settings handler, on any notebook page"),
]

# User settings for both front ends (Notebook 7 reads JupyterLab's): no news or update prompts (they need the
# network and their toast would cover the widget), and every cell attached to the DOM (no windowing), so the
# rendered output is all there.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
        {"fetchNews": "false", "checkForUpdates": False, "doNotDisturbMode": True},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}

KERNEL_IDLE_JS = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.status === 'idle';
}"""
# Run every cell; the command's promise settles when all have run (or one failed), which tells a failed cell from a
# slow fit without waiting for the timeout.
RUN_ALL_JS = """() => {
  window.__jlRunStart = performance.now();
  window.__jlRunDone = null;
  window.jupyterapp.commands.execute('notebook:run-all-cells').then(
    (ok) => { window.__jlRunDone = 'done: ' + ok; }, (e) => { window.__jlRunDone = 'failed: ' + e; });
}"""
# Save the notebook; settles to 'saved' or the error.
SAVE_JS = """() => window.jupyterapp.commands.execute('docmanager:save').then(() => 'saved', (e) => 'failed: ' + e)"""


def missing(*modules: str) -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set JL_CHROMIUM; see .ci/install-browser)"
    for module in ("playwright", "jupyterlab", "ipywidgets", "ipykernel", *modules):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install playwright jupyterlab notebook; see .ci/install-browser)"
    return None


def skip_unless_browser(*modules: str):
    """The module's `pytestmark`: skip with the reason where the browser or a package is missing. CI installs them
    (.ci/install-browser), so there a missing piece is a failure, never a silent skip."""
    import pytest

    why = missing(*modules)
    if os.environ.get("CI") and why is not None:
        raise RuntimeError(f"the browser tests cannot run in CI: {why}")
    return pytest.mark.skipif(why is not None, reason=why or "")


class Deadline:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def ms(self, cap: float) -> float:
        """A Playwright timeout: `cap` seconds, or what is left of the whole test if that is less."""
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError("the browser test ran out of its time budget")
        return 1000 * min(cap, left)


def write_notebook(path: Path, cells: list[str]) -> None:
    nb = {"cells": [{"cell_type": "code", "execution_count": None, "id": f"cell{i}", "metadata": {}, "outputs": [],
                     "source": src} for i, src in enumerate(cells)],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                      "language": "python"},
                       "language_info": {"name": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb, indent=1))


def unexpected(messages: list[str]) -> list[str]:
    return [m for m in messages if not any(pattern.search(m) for pattern, _ in IGNORED_CONSOLE)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lab_env(tmp: Path) -> dict:
    """A server of its own: config, runtime, settings and workspaces under tmp, and a `python3` kernel spec that is
    this interpreter (found first through JUPYTER_PATH), whatever kernels the machine has installed."""
    share = tmp / "share"
    spec = share / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)", "language": "python"}))
    settings = tmp / "lab-settings"
    for rel, values in LAB_SETTINGS.items():
        (settings / rel).parent.mkdir(parents=True, exist_ok=True)
        (settings / rel).write_text(json.dumps(values))
    env = dict(os.environ)
    # the kernel shares the accelerator with this pytest process, which may already hold JAX's preallocation
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    env.update(JUPYTER_CONFIG_DIR=str(tmp / "config"), JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
               JUPYTER_DATA_DIR=str(tmp / "data"), JUPYTERLAB_SETTINGS_DIR=str(settings),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"), JUPYTER_PLATFORM_DIRS="1",
               JUPYTER_PATH=os.pathsep.join(p for p in (str(share), os.environ.get("JUPYTER_PATH")) if p),
               PYTHONUNBUFFERED="1")
    return env


class JupyterServer:
    """A Jupyter server (no token, no browser) serving `notebooks` on 127.0.0.1, started with this interpreter so the
    kernels run in the same environment: `app` "lab" (`jupyter lab`) or "notebook" (`jupyter notebook`, Notebook 7).
    Both front ends expose their app to the page (`window.jupyterapp`)."""

    def __init__(self, tmp: Path, app: str = "lab"):
        self.tmp = tmp
        self.notebooks = tmp / "notebooks"
        self.notebooks.mkdir()
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"jupyter-{app}.log"
        with open(self.log, "w") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "jupyter", app, "--no-browser", f"--port={self.port}",
                 "--ServerApp.ip=127.0.0.1", "--ServerApp.token=", "--ServerApp.password=",
                 "--ServerApp.disable_check_xsrf=True", "--ServerApp.port_retries=0", "--allow-root",
                 "--LabApp.expose_app_in_browser=True", "--JupyterNotebookApp.expose_app_in_browser=True",
                 "--ServerApp.root_dir=" + str(self.notebooks)],
                stdout=log_file, stderr=subprocess.STDOUT, env=_lab_env(tmp), cwd=self.notebooks)

    def wait_ready(self, seconds: float = 60) -> None:
        limit = time.monotonic() + seconds
        while time.monotonic() < limit:
            if self.process.poll() is not None:
                raise RuntimeError(f"the Jupyter server exited with {self.process.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.url + "/api/status", timeout=2):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.25)
        raise RuntimeError(f"the Jupyter server did not answer within {seconds:.0f} s:\n{self.tail()}")

    def tail(self) -> str:
        return self.log.read_text()[-3000:]

    def _api(self, path: str, method: str = "GET"):
        with urllib.request.urlopen(urllib.request.Request(self.url + path, method=method), timeout=10) as reply:
            body = reply.read()
        return json.loads(body) if body else None

    def reset(self) -> None:
        """Between tests: shut every kernel down (each waits for its background fit to stop at a step boundary) and
        forget the front ends' saved layout. Notebook 7 restores the workspace JupyterLab saved, and fails on its
        file-browser state ("Command 'filebrowser:open-path' not registered"), so each test starts as on a new
        server."""
        for kernel in self._api("/api/kernels") or []:
            try:
                self._api(f"/api/kernels/{kernel['id']}", method="DELETE")
            except (urllib.error.URLError, OSError):
                pass
        for saved in (self.tmp / "workspaces").glob("*"):
            saved.unlink()

    def stop(self) -> None:
        """Shut the server down through its API (it shuts its kernels down first), then make sure it is gone."""
        if self.process.poll() is None:
            try:
                self._api("/api/shutdown", method="POST")
                self.process.wait(timeout=20)
            except Exception:  # noqa: BLE001 — whatever went wrong, fall through to terminate/kill
                pass
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def new_page(browser, errors: list[str], height: int = 1400):
    """A page whose JavaScript errors (uncaught, or logged as console errors) are appended to `errors`."""
    page = browser.new_page(viewport={"width": 1200, "height": height})
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e.message} at {_first_frame(e.stack)}"))
    page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text} ({m.location.get('url', '')})")
            if m.type == "error" else None)
    return page


def _first_frame(stack: str | None) -> str:
    """Where an uncaught error was thrown: the script URL of the stack's first frame."""
    found = re.search(r"\(?(https?://[^\s)]+?)(?::\d+:\d+)?\)?$", next(
        (line.strip() for line in (stack or "").splitlines() if line.strip().startswith("at ")), ""))
    return found.group(1) if found else "?"


def open_notebook(page, url: str, deadline: Deadline) -> None:
    """Go to `url` (a notebook in either front end) and wait for its cells and an idle kernel."""
    page.goto(url, timeout=deadline.ms(60))
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=deadline.ms(60))
    page.wait_for_function(KERNEL_IDLE_JS, timeout=deadline.ms(60))


def screenshot(page, name: str) -> None:
    """The whole page, for a look at what happened (also when a check failed): never hides the real failure."""
    try:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / name), timeout=10_000)
    except Exception:  # noqa: BLE001
        pass
