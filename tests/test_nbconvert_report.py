"""The end-of-fit report survives execution by nbclient and export by nbconvert (what CI and nbviewer see)."""

import inspect
import subprocess
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
nbconvert = pytest.importorskip("nbconvert")

from tests.test_display import charts_in, fake_events  # noqa: E402

KERNEL = "python3"

CELL = """\
import sys
from jupyter_llm.sinks.select import make_display_sinks
from jupyter_llm.sinks.widget import WidgetSink

sinks = make_display_sinks("widget")
assert isinstance(sinks[0], WidgetSink), sinks
for event in fake_events(epochs=4, steps_per_epoch=50):
    for sink in sinks:
        sink.on(event)
print(sys.prefix)
"""


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
    """Make the `python3` kernel this interpreter: install a kernelspec into a temp prefix if none resolves."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL)
        # jupyter_client runs a bare "python" as sys.executable; any other interpreter must be this venv's
        ok = spec.argv[0] in ("python", "python3", sys.executable)
    except NoSuchKernel:
        ok = False
    if not ok:
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--prefix", str(tmp_path / "k"),
                        "--name", KERNEL], check=True, capture_output=True)
        monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "k" / "share" / "jupyter"))


def test_report_survives_execution_and_html_export(tmp_path, kernel_env):
    import os

    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(inspect.getsource(fake_events)), nbformat.v4.new_code_cell(CELL)]
    NotebookClient(nb, kernel_name=KERNEL, timeout=180, resources={"metadata": {"path": repo}}).execute()

    outputs = nb.cells[1].outputs
    assert outputs[-1].output_type == "stream" and outputs[-1].text.strip() == sys.prefix  # ran in this venv
    displays = [o for o in outputs if o.output_type == "display_data"]
    assert "application/vnd.jupyter.widget-view+json" in displays[0].data  # the live widget
    report = displays[-1].data
    assert 'class="jl-summary"' in report["text/html"] and "<svg" in charts_in(report["text/html"])
    assert "Completed at step 200/200" in report["text/plain"]  # what static viewers without HTML show
    assert "application/vnd.jupyter.widget-state+json" in nb.metadata.widgets  # nbclient saved the widget state

    html, _ = HTMLExporter().from_notebook_node(nb)
    assert 'class="jl-summary"' in html and "<polyline" in charts_in(html)  # the curves, as an SVG image
    assert "Completed" in html and "validation" in html
