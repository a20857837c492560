"""%%train against a real InteractiveShell: the cell body runs first, names resolve, results are bound."""

import numpy as np
from flax import nnx

from jupyter_llm.options import all_options
from tests.helpers import params_of, same_params

BODY = """
model = jl.models.MLP(in_features=64, hidden=[32], num_classes=10, rngs=nnx.Rngs(0))
data = jl.datasets.load("digits")
"""


def test_load_puts_jl_and_nnx_in_namespace(ipython):
    import jupyter_llm

    assert ipython.user_ns["jl"] is jupyter_llm and ipython.user_ns["nnx"] is nnx


def test_cell_magic_trains_and_binds_run(ipython):
    result = ipython.run_cell("%%train --epochs 3 --val-split 0.2 --display none\n" + BODY)
    assert result.success, result.error_in_exec
    run, model = ipython.user_ns["run"], ipython.user_ns["model"]
    assert run.model is model and run.reason == "completed"
    assert len(run.history["val_accuracy"]) == 3
    assert run.config.epochs == 3 and run.config.val_split == 0.2
    assert run.test_metrics is not None  # digits has a test split: evaluated at the end
    assert set(run.evaluate("test")) == {"loss", "accuracy"}
    assert run.predict(ipython.user_ns["data"].test[0][:5]).shape == (5, 10)


def test_empty_body_and_line_magic_train_the_namespace(ipython):
    ipython.run_cell(BODY)
    first = params_of(ipython.user_ns["model"])
    assert ipython.run_cell("%%train --epochs 1 --display none\n# nothing new: train the namespace's model\n").success
    assert not all(np.array_equal(a, b) for a, b in zip(first, params_of(ipython.user_ns["model"])))
    assert ipython.run_cell("%train --epochs 1 --out second --display none").success
    assert ipython.user_ns["second"].step == ipython.user_ns["run"].step


def test_a_cell_of_options_alone_is_the_line_magic(ipython):
    ipython.run_cell(BODY)
    result = ipython.run_cell("%%train --epochs 1 --display none --out alone")  # IPython refuses an empty cell magic
    assert result.success, result.error_in_exec
    assert ipython.user_ns["alone"].step > 0 and ipython.user_ns["alone"].model is ipython.user_ns["model"]


def test_resume_names_a_run_in_the_notebook(ipython):
    from IPython.core.error import UsageError

    line = "--display none --val-split 0.2"
    assert ipython.run_cell(f"%%train --epochs 2 {line} --out whole\n{BODY}").success
    assert ipython.run_cell(f"%%train --epochs 1 {line} --out run2\n{BODY}").success
    result = ipython.run_cell(f"%%train --epochs 2 {line} --resume run2 --out run3\n{BODY}")  # a fresh model
    assert result.success, result.error_in_exec
    assert ipython.user_ns["run3"].history == ipython.user_ns["whole"].history  # as if never interrupted
    ipython.run_cell("x = 5")
    result = ipython.run_cell(f"%train --epochs 3 {line} --resume x")
    assert isinstance(result.error_in_exec, UsageError)
    assert "--resume x names an int in the notebook, not a Run" in str(result.error_in_exec)


def test_custom_names_and_optimizer_object_from_namespace(ipython):
    ipython.run_cell("import optax\nnet = jl.models.MLP(in_features=64, hidden=[16], num_classes=10, "
                     "rngs=nnx.Rngs(1))\ntx = optax.sgd(0.1)")
    result = ipython.run_cell("%train --model net --data digits --optimizer tx --epochs 2 --out fitted --display none")
    assert result.success, result.error_in_exec
    assert ipython.user_ns["fitted"].model is ipython.user_ns["net"]
    assert ipython.user_ns["fitted"].config.optimizer is ipython.user_ns["tx"]


def test_cell_body_error_does_not_train(ipython):
    from IPython.core.error import UsageError

    ipython.run_cell(BODY)
    weights = params_of(ipython.user_ns["model"])
    result = ipython.run_cell("%%train --epochs 1 --display none\nraise ValueError('boom')")
    assert isinstance(result.error_in_exec, UsageError)
    assert "training did not start" in str(result.error_in_exec)
    assert all(np.array_equal(a, b) for a, b in zip(weights, params_of(ipython.user_ns["model"])))


MISSING_TEXT = 'data = jl.datasets.text("/no/such/corpus file.txt")'


def _shown(ipython, source):
    """What the cell prints, tracebacks included (the test shell writes them to stdout)."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        result = ipython.run_cell(source)
    return result, out.getvalue()


def test_library_error_in_a_cell_shows_the_users_lines_not_the_librarys(ipython):
    import jupyter_llm

    library = jupyter_llm.__path__[0]
    result, shown = _shown(ipython, "x = 1\n" + MISSING_TEXT)
    assert type(result.error_in_exec).__name__ == "DatasetNotFound"
    assert "----> 2 " + MISSING_TEXT in shown  # the user's own line, marked
    assert "DatasetNotFound: Cannot read the text file '/no/such/corpus file.txt'" in shown
    assert library not in shown and len(shown.strip().splitlines()) <= 8
    # the exception keeps every frame for %debug, and %xmode Verbose shows them all again
    frames, tb = [], result.error_in_exec.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame.f_code.co_filename)
        tb = tb.tb_next
    assert any(f.startswith(library) for f in frames)
    ipython.run_line_magic("xmode", "Verbose")
    try:
        _, verbose = _shown(ipython, MISSING_TEXT)
    finally:
        ipython.run_line_magic("xmode", "Context")
    assert library in verbose


def test_library_error_in_the_cell_body_is_short_too(ipython):
    result, shown = _shown(ipython, "%%train --epochs 1 --display none\n" + BODY + MISSING_TEXT)
    assert "training did not start" in str(result.error_in_exec)
    # line 5 of the cell (the magic's line, a blank line, two lines of BODY): numbered as the user sees the cell
    assert "DatasetNotFound: Cannot read the text file" in shown and "----> 5 " + MISSING_TEXT in shown, shown
    assert len(shown.strip().splitlines()) <= 12, shown


def test_a_body_error_names_the_cells_own_line(ipython):
    result, shown = _shown(ipython, "%%train --epochs 1 --display none\n\nx = 1\nraise ValueError('boom')\n")
    assert "training did not start" in str(result.error_in_exec)
    assert "Cell In[" in shown and ", line 4" in shown and "----> 4 raise ValueError('boom')" in shown, shown
    # a body that starts with another cell magic still runs it
    result, shown = _shown(ipython, "%%train --epochs 1 --display none\n%%capture captured\nprint('hidden')\n"
                           "model = jl.models.MLP(in_features=64, hidden=[8], num_classes=10, rngs=nnx.Rngs(0))\n"
                           "data = jl.datasets.load('digits')")
    assert result.success, result.error_in_exec
    assert "hidden" not in shown and "hidden" in ipython.user_ns["captured"].stdout


def test_other_errors_keep_their_full_traceback(ipython):
    _, shown = _shown(ipython, "def f():\n    raise ValueError('boom')\nf()")
    assert "----> 2     raise ValueError('boom')" in shown  # an error in the user's code is not shortened


def test_help_lists_every_option_with_default(ipython):
    doc = ipython.find_cell_magic("train").__doc__
    for opt in all_options():
        assert opt.flag in doc, opt.flag
    assert "(default: 32)" in doc and "(default: adam)" in doc


def test_magic_cell_equals_fit_for_same_seed(ipython):
    import jupyter_llm as jl

    ipython.run_cell("%%train --epochs 2 --val-split 0.2 --seed 5 --display none\n" + BODY)
    model = jl.models.MLP(in_features=64, hidden=[32], num_classes=10, rngs=nnx.Rngs(0))
    run = jl.fit(model, "digits", epochs=2, val_split=0.2, seed=5, display="none")
    assert run.history == ipython.user_ns["run"].history
    assert same_params(model, ipython.user_ns["model"])


def test_unload_removes_the_magic(ipython):
    ipython.run_line_magic("unload_ext", "jupyter_llm")
    assert ipython.find_cell_magic("train") is None
    ipython.run_line_magic("load_ext", "jupyter_llm")
    assert ipython.find_cell_magic("train") is not None


def test_the_short_traceback_comes_with_the_extension(ipython):
    """The error classes know nothing of IPython: `%load_ext` gives them IPython's hook, `%unload_ext` takes it away."""
    from jupyter_llm.errors import JupyterLLMError

    assert hasattr(JupyterLLMError, "_render_traceback_")
    ipython.run_line_magic("unload_ext", "jupyter_llm")
    try:
        assert not hasattr(JupyterLLMError, "_render_traceback_")
    finally:
        ipython.run_line_magic("load_ext", "jupyter_llm")
    assert hasattr(JupyterLLMError, "_render_traceback_")


def test_a_built_in_loss_name_means_the_built_in_even_if_the_notebook_has_one(ipython):
    """`--loss mse` used a notebook function named `mse` over the built-in; a callable of another name still works."""
    from IPython.core.error import UsageError

    calls = []

    def mse(outputs, labels):  # the user's own helper that happens to share the name
        calls.append("mse")
        raise AssertionError("the built-in mse was meant")

    def my_loss(outputs, labels):
        import optax

        calls.append("my_loss")
        return optax.softmax_cross_entropy_with_integer_labels(outputs, labels).mean()

    ipython.user_ns.update(mse=mse, my_loss=my_loss)
    result = ipython.run_cell(BODY + "\n%train --epochs 1 --display none --loss cross_entropy")
    assert result.success and ipython.user_ns["run"].loss_name == "cross_entropy"
    result = ipython.run_cell("%train --epochs 1 --display none --loss my_loss")
    assert result.success and ipython.user_ns["run"].loss_name == "my_loss" and calls == ["my_loss"] * len(calls)
    result = ipython.run_cell("%train --epochs 1 --display none --loss mse")
    assert "mse" not in calls
    assert isinstance(result.error_in_exec, UsageError) and "Mean squared error" in str(result.error_in_exec)
