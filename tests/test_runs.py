"""Comparing runs: `jl.runs()` / `%runs` keep lightweight records (never the Run or its model), bounded, and show
only the settings that differ."""

import gc
import importlib
import weakref

import jax
import numpy as np
import pytest
from flax import nnx

import jupyter_llm as jl
from jupyter_llm.fitting.runlog import MAX_RUNS, RunRecord, RunsTable

# The module (not `jupyter_llm.runs`, which is the lazily exported function until the module is first imported).
runs_mod = importlib.import_module("jupyter_llm.fitting.runlog")

SETTINGS = [dict(lr=1e-3, batch_size=16), dict(lr=1e-2, batch_size=16), dict(lr=1e-2, batch_size=32)]


def tiny_data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(96, 8)).astype("float32")
    y = rng.integers(0, 3, 96)
    return {"train": (x[:64], y[:64]), "test": (x[64:], y[64:])}


def tiny_model():
    return jl.models.MLP(in_features=8, hidden=[16], num_classes=3, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def three_runs():
    """Three short fits differing in lr and batch size; their records, oldest first."""
    runs_mod.clear_runs()
    data = tiny_data()
    for options in SETTINGS:
        jl.fit(tiny_model(), data, epochs=2, val_split=0.25, display="none", **options)
    recs = runs_mod.records()
    runs_mod.clear_runs()
    return recs


def test_table_shows_exactly_the_settings_that_differ(three_runs):
    assert len(three_runs) == 3
    table = RunsTable(three_runs)
    assert table.differing == ["batch_size", "lr"]  # in the configuration's order; epochs, optimizer... are equal
    assert table.columns[:3] == ["run", "batch_size", "lr"]
    assert {"loss", "val_loss", "val_accuracy", "test_loss", "test_accuracy"} <= set(table.metrics)
    assert table.metrics[:2] == ["loss", "val_loss"]
    rows = table.rows()
    assert [(r["lr"], r["batch_size"]) for r in rows] == [(s["lr"], s["batch_size"]) for s in SETTINGS]
    assert all(r["reason"] == "completed" for r in rows)
    assert [r["steps run"] for r in rows] == [2 * 3, 2 * 3, 2 * 2]  # 48 training examples: 3 or 2 batches an epoch
    assert all(np.isfinite(r["val_loss"]) and np.isfinite(r["test_accuracy"]) for r in rows)

    text = repr(table)
    header = text.splitlines()[0].split()
    assert header == " ".join(table.columns).split()  # ("steps run" is one column of two words)
    assert "epochs" not in header and "optimizer" not in header and "display" not in header
    assert len(text.splitlines()) == 1 + 3 + 1  # header, one line per run, the note

    html = table._repr_html_()
    assert html.count("<tr>") == 1 + 3
    assert '<img alt="runs compared" src="data:image/svg+xml;base64,' in html
    assert "<th" in html and ">batch_size</th>" in html and ">epochs</th>" not in html


def test_records_are_plain_values(three_runs):
    rec = three_runs[0]
    assert rec.model == "MLP" and rec.params == 8 * 16 + 16 + 16 * 3 + 3
    assert rec.config["lr"] == 1e-3 and rec.config["epochs"] == 2
    assert set(rec.history) >= {"loss", "val_loss", "val_accuracy"} and len(rec.history["loss"]) == 2
    assert rec.elapsed >= 0 and rec.compile_seconds >= 0 and rec.step == 6
    assert [r.index for r in three_runs] == sorted(r.index for r in three_runs)
    assert len({r.name for r in three_runs}) == 3


def test_curves_overlay_every_run_per_epoch(three_runs):
    table = RunsTable(three_runs)
    series, quantity, xlabel = table.curves()
    assert (quantity, xlabel) == ("val loss", "epoch")
    assert list(series) == [r.name for r in three_runs]
    assert all([x for x, _ in pts] == [1.0, 2.0] for pts in series.values())
    svg = table.chart_svg()
    assert svg.count("<polyline") == 3


def test_a_run_can_be_collected_after_it_is_recorded():
    """The record keeps no reference to the Run, its model or its device buffers."""
    runs_mod.clear_runs()
    model = tiny_model()
    run = jl.fit(model, tiny_data(1), epochs=1, batch_size=32, display="none")
    assert len(runs_mod.records()) == 1  # fit recorded it
    buffer = jax.tree.leaves(run.state)[0]  # a device array of the final train state
    refs = [weakref.ref(run), weakref.ref(model), weakref.ref(run._sink), weakref.ref(buffer)]
    del run, model, buffer
    gc.collect()
    assert [r() for r in refs] == [None] * len(refs)
    assert jl.runs()[0].reason == "completed"  # the record outlives them
    runs_mod.clear_runs()


def fake_record(i, **over):
    fields = dict(index=i, time=1.7e9 + i, config={"lr": 1e-3, "epochs": 3, "steps": None, "display": "auto"},
                  history={"loss": [1.0, 0.8, 0.6], "val_loss": [1.1, 0.9, 0.7]}, test_metrics=None,
                  reason="completed", step=30, model="MLP", params=100, elapsed=1.0, compile_seconds=0.5)
    fields.update(over)
    return RunRecord(**fields)


def test_the_list_is_bounded(monkeypatch):
    runs_mod.clear_runs()
    for i in range(MAX_RUNS + 7):
        runs_mod._RUNS.append(fake_record(i))
    table = jl.runs()
    assert len(table) == MAX_RUNS and table[0].index == 7 and table[-1].index == MAX_RUNS + 6
    series, _, _ = table.curves()
    assert len(series) == runs_mod.MAX_CHART_RUNS  # the chart overlays the newest few
    assert "(newest 10 of 100)" in table.chart_svg()
    assert jl.runs(clear=True) is not None and len(jl.runs()) == 0


def test_differences_and_curve_choice_from_records():
    same = RunsTable([fake_record(1), fake_record(2)])
    assert same.differing == []  # nothing changed between them
    one = RunsTable([fake_record(1)])
    assert one.differing == [] and one.columns[0] == "run"
    shown_only = RunsTable([fake_record(1), fake_record(2, config={"lr": 1e-3, "epochs": 3, "steps": None,
                                                                   "display": "text"})])
    assert shown_only.differing == []  # the display mode does not change what is learned
    model = RunsTable([fake_record(1), fake_record(2, model="CNN", params=5000)])
    assert model.differing == ["model", "params"]
    no_val = RunsTable([fake_record(1), fake_record(2, history={"loss": [1.0, 0.5]})])
    assert no_val.curves()[1:] == ("loss", "epoch")  # one run has no validation loss: compare training loss
    steps = RunsTable([fake_record(1, config={"steps": 50}, val_curve=((25.0, 1.0), (50.0, 0.8))),
                       fake_record(2, config={"steps": 80}, val_curve=((40.0, 0.9), (80.0, 0.7)))])
    series, quantity, xlabel = steps.curves()
    assert (quantity, xlabel) == ("val loss", "step") and series["#2"] == [(40.0, 0.9), (80.0, 0.7)]
    assert steps.differing == ["steps"]
    assert steps.columns.count("steps") == 1 and "steps run" in steps.columns  # the setting and what happened
    assert [row["steps"] for row in steps.rows()] == [50, 80]  # the settings, not overwritten by the steps run
    assert steps.metrics == ["loss", "val_loss"]


def test_text_corpus_fits_are_compared_by_steps_with_the_corpus_they_covered():
    """A language model's fit without --steps still has evaluation intervals, not epochs: charted per step, and its
    steps run say how much of the corpus they covered."""
    lm = RunsTable([fake_record(1, step=500, steps_per_pass=1600.0, val_curve=((250.0, 2.0), (500.0, 1.8))),
                    fake_record(2, step=1000, steps_per_pass=1600.0, val_curve=((500.0, 1.9), (1000.0, 1.6)))])
    assert lm.curves()[1:] == ("val loss", "step")
    assert [row["steps run"] for row in lm.rows()] == [500, 1000]  # numbers stay numbers
    assert "500 (0.31 epochs)" in repr(lm) and "1000 (0.62 epochs)" in lm._repr_html_()
    assert "epochs)" not in repr(RunsTable([fake_record(1)]))  # array data: steps alone


def test_empty_table_and_record_never_raises_but_says_so():
    runs_mod.clear_runs()
    with pytest.warns(RuntimeWarning, match="could not be recorded for %runs / jl.runs\\(\\): AttributeError"):
        runs_mod.record(object())  # not a Run: never an error at the end of a fit, never silent either
    table = jl.runs()
    assert len(table) == 0 and "No runs recorded" in repr(table) and "No runs recorded" in table._repr_html_()


def test_paused_fits_are_not_recorded():
    runs_mod.clear_runs()
    with runs_mod.paused():
        jl.fit(tiny_model(), tiny_data(2), epochs=1, batch_size=32, display="none")
    assert len(runs_mod.records()) == 0


def test_jl_runs_is_the_function():
    import jupyter_llm

    assert isinstance(jupyter_llm.runs(), RunsTable)
    assert isinstance(runs_mod.runs(), RunsTable)


def test_runs_magic(ipython, capsys):
    from IPython.core.error import UsageError

    from jupyter_llm.ipython.runs_magic import RunsMagics

    ipython.register_magics(RunsMagics)
    runs_mod.clear_runs()
    runs_mod._RUNS.extend([fake_record(1), fake_record(2, config={"lr": 0.1, "epochs": 3, "steps": None})])
    table = ipython.run_line_magic("runs", "")
    assert isinstance(table, RunsTable) and table.differing == ["lr"]
    assert ipython.run_line_magic("runs", "--clear") is None
    assert "Cleared 2 recorded runs." in capsys.readouterr().out
    assert len(runs_mod.records()) == 0
    with pytest.raises(UsageError, match="--clear"):
        ipython.run_line_magic("runs", "--all")
