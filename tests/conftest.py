"""Test set-up: keep downloads and caches inside a temporary folder, never the user's home or the network."""

import os
import tempfile

os.environ.setdefault("JUPYTER_LLM_DATA", tempfile.mkdtemp(prefix="jl-data-"))
os.environ.setdefault("JUPYTER_LLM_COMPILE_CACHE", tempfile.mkdtemp(prefix="jl-xla-"))

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def digits():
    import jupyter_llm as jl

    return jl.datasets.load("digits")


@pytest.fixture
def small_data(digits):
    """A small digits subset: quick fits that still learn."""
    x, y = digits.train
    return {"train": (x[:512], y[:512]), "test": digits.test}


@pytest.fixture
def ipython():
    """A real InteractiveShell with the extension loaded (no kernel)."""
    from IPython.testing.globalipapp import get_ipython, start_ipython

    ip = start_ipython() or get_ipython()  # the global test shell is made once per process
    ip.run_line_magic("load_ext", "jupyter_llm")
    before = set(ip.user_ns)
    yield ip
    for name in ("model", "data", "run", "x", "y", "other", *(set(ip.user_ns) - before)):
        ip.user_ns.pop(name, None)  # each test starts from the same namespace, whatever ran before it


@pytest.fixture(scope="session")
def jupyter_server(tmp_path_factory):
    """One Jupyter server for every browser test (tests/browser_lab.py), started when the first one asks for it."""
    from tests.browser_lab import JupyterServer

    server = JupyterServer(tmp_path_factory.mktemp("jupyter"))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture
def lab(jupyter_server):
    """The shared server; when the test ends its kernels are shut down (none of its fits runs into the next test) and
    the front ends' saved layout is forgotten."""
    yield jupyter_server
    jupyter_server.reset()


@pytest.fixture
def notebook7(tmp_path):
    """A Notebook 7 server (`jupyter notebook`) of the test's own (tests/browser_lab.py says why not the shared one)."""
    from tests.browser_lab import JupyterServer

    server = JupyterServer(tmp_path, app="notebook")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
