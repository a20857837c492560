"""With --keep-best the report's table holds the metrics of the weights the model holds (the best epoch's), and says
the last epoch's beside them — not the last epoch's numbers next to 'restored the best weights'."""

import pytest
from flax import nnx

import jupyter_llm as jl


def test_the_report_shows_the_held_weights_metrics_and_the_last_epochs_as_such():
    model = jl.models.MLP(in_features=64, hidden=[256], num_classes=10, rngs=nnx.Rngs(0))
    run = jl.fit(model, "digits", epochs=11, batch_size=16, lr=3e-2, val_split=0.3, keep_best=True, display="none",
                 seed=0)
    val = run.history["val_loss"]
    best = min(range(len(val)), key=val.__getitem__)
    assert best != len(val) - 1, val  # the case in question: the best is not the last
    report = run._report()
    held = run.evaluate("validation")["loss"]
    assert held == pytest.approx(val[best], rel=1e-6)  # the model holds the best epoch's weights
    assert report.final["loss"]["validation"] == pytest.approx(held, rel=1e-6)
    assert report.final["accuracy"]["test"] == pytest.approx(run.evaluate("test")["accuracy"], abs=1e-9)
    text = repr(report)
    assert f"epoch {best + 1} (the best)" in text and f"val_loss {val[-1]:.4g}" in text
    assert "the last epoch" in report.metrics_html() and "<caption" in report.metrics_html()
