"""Where a fit stands, in the words every display uses (live widget, HTML, text, report, `%runs`, run.json).

Array data is seen in epochs, passes over the training split: a fit stands at "epoch 2/5 · step 90/225". A text
corpus is sampled in random windows, so it has no passes: its history's "epochs" are evaluation intervals
(`--eval-every` steps), and "epoch 1/2" would claim a pass that never happened. Such a fit stands at
"step 500/2000 (0.31 epochs)": steps, and the tokens seen as a fraction of the training tokens.
"""

from __future__ import annotations


def windowed(start) -> bool:
    """True for a fit whose epochs are evaluation intervals (a text corpus: `FitStart.steps_per_pass` is set)."""
    return bool(getattr(start, "steps_per_pass", None))


def corpus_epochs(start, step: int) -> float:
    """The tokens of `step` steps as a multiple of the training split's."""
    return step / start.steps_per_pass


def format_epochs(value: float) -> str:
    """0.0042 -> '0.004 epochs', 0.3125 -> '0.31 epochs', 12.4 -> '12 epochs'."""
    if value < 0.01:
        text = f"{value:.1g}" if value else "0"
    else:
        text = f"{value:.2f}" if value < 10 else f"{value:.0f}"
    return f"{text} epochs"


def position_text(start, step: int, epoch: int, *, sep: str = " · ") -> str:
    """'epoch 2/5 · step 90/225' for array data, 'step 500/2000 (0.31 epochs)' for a text corpus."""
    if windowed(start):
        return f"step {step}/{start.steps_total} ({format_epochs(corpus_epochs(start, step))})"
    return f"epoch {epoch}/{start.epochs}{sep}step {step}/{start.steps_total}"


def at_text(start, step: int, epoch: int, *, of_total: bool = False) -> str:
    """'(epoch 2)' ('(epoch 2/5)' `of_total`) or '(0.31 epochs)': what a step stands for, after 'at step N/M'."""
    if windowed(start):
        return f"({format_epochs(corpus_epochs(start, step))})"
    return f"(epoch {epoch}/{start.epochs})" if of_total else f"(epoch {epoch})"
