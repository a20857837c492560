"""A background fit steered from its display in a real browser (JupyterLab + headless Chromium, as test_browser.py):
the cell returns at once, Pause holds the step still, the learning-rate box reaches the fit (the phase line shows
the change), Stop ends it as interrupted. Skipped where test_browser.py is."""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.test_browser import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    KERNEL_IDLE_JS,
    RUN_ALL_JS,
    Deadline,
    _free_port,
    _missing,
    _stop_server,
    _unexpected,
    _wait_for_server,
    start_lab,
)

CELLS = [
    "%load_ext jupyter_llm",
    "model = jl.models.MLP(in_features=64, hidden=[128], num_classes=10, rngs=nnx.Rngs(0))\n"
    'data = jl.datasets.load("digits")',
    "%train --background --steps 10000000 --steps-per-dispatch 1 --batch-size 32 --display widget",
]
WIDGET = ".jp-OutputArea-output .widget-vbox:has(.widget-hprogress)"
STATUS = ".widget-hbox:has(.widget-hprogress) > div.widget-label"
END = ".widget-html-content .jl-end[data-reason]"


def _step(widget) -> int:
    found = re.search(r"step (\d+)", widget.locator(STATUS).inner_text())
    return int(found.group(1)) if found else -1


@pytest.mark.skipif(_missing() is not None, reason=str(_missing()))
def test_pause_lr_and_stop_from_the_display(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    deadline = Deadline(175)
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    nb = {"cells": [{"cell_type": "code", "execution_count": None, "id": f"cell{i}", "metadata": {}, "outputs": [],
                     "source": src} for i, src in enumerate(CELLS)],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"},
                       "language_info": {"name": "python"}}, "nbformat": 4, "nbformat_minor": 5}
    (notebooks / "steer.ipynb").write_text(json.dumps(nb))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "jupyterlab.log"
    ARTIFACTS.mkdir(exist_ok=True)
    errors: list[str] = []
    with open(log, "w") as log_file:
        lab = start_lab(port, notebooks, tmp_path, log_file)
    try:
        _wait_for_server(url, lab, deadline, log)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=deadline.ms(30))
            page = browser.new_page(viewport={"width": 1200, "height": 1400})
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
            try:
                page.goto(f"{url}/lab/tree/steer.ipynb", timeout=deadline.ms(60))
                page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=deadline.ms(60))
                page.wait_for_function(KERNEL_IDLE_JS, timeout=deadline.ms(60))
                page.evaluate(RUN_ALL_JS)
                page.wait_for_function("() => window.__jlRunDone !== null", timeout=deadline.ms(60))
                assert page.evaluate("() => window.__jlRunDone") == "done: true"  # every cell returned
                widget = page.locator(WIDGET)
                expect(widget).to_have_count(1, timeout=deadline.ms(30))
                limit = time.monotonic() + deadline.ms(60) / 1000
                while _step(widget) < 50 and time.monotonic() < limit:  # training, with the kernel idle
                    time.sleep(0.2)
                assert _step(widget) >= 50, widget.locator(STATUS).inner_text()

                widget.get_by_role("button", name="Pause").click()
                expect(widget.get_by_role("button", name="Resume")).to_have_count(1, timeout=deadline.ms(10))
                time.sleep(1.5)  # the last report before the pause lands
                held = _step(widget)
                time.sleep(2.0)
                assert _step(widget) == held, "the step moved while paused"

                lr = widget.locator(".widget-text:has(label:text-is('lr')) input")
                lr.fill("0.0003")
                lr.press("Enter")
                widget.get_by_role("button", name="Resume").click()
                expect(widget.locator(".widget-html-content")).to_contain_text(
                    ["lr → 0.0003"], timeout=deadline.ms(20))
                assert _step(widget) > held

                widget.get_by_role("button", name="Stop").click()
                expect(widget.locator(END)).to_have_attribute("data-reason", "interrupted", timeout=deadline.ms(30))
                widget.screenshot(path=str(ARTIFACTS / "steer_widget.png"), timeout=deadline.ms(20))
            finally:
                try:
                    page.screenshot(path=str(ARTIFACTS / "steer_page.png"), timeout=10_000)
                except Exception:  # noqa: BLE001 — a missing debugging picture must not hide the real failure
                    pass
                browser.close()
    finally:
        _stop_server(url, lab)
    unexpected = _unexpected(errors)
    assert not unexpected, "JavaScript errors in the page:\n" + "\n".join(unexpected)
