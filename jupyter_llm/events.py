"""Progress events: what the training loop tells the world, and the one-method Sink protocol.

The loop yields these frozen dataclasses; displays (text, widget, report, TensorBoard) and the history are thin
consumers. Events carry plain Python numbers only (metrics have already been read from the device at the
reporting cadence), so a sink never forces a host sync of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, runtime_checkable

# The reasons a fit can end with. A sink styles each distinctly.
COMPLETED = "completed"
EARLY_STOPPED = "early-stopped"
INTERRUPTED = "interrupted"
NAN = "nan"
FAILED = "failed"
END_REASONS = (COMPLETED, EARLY_STOPPED, INTERRUPTED, NAN, FAILED)


@dataclass(frozen=True)
class FitStart:
    """Sent once, before compilation. Everything a header needs."""

    config: Any  # FitConfig
    model_name: str
    param_count: int
    devices: str  # e.g. "cpu x 1"
    batch_size: int
    steps_total: int
    steps_per_epoch: int
    epochs: int
    split_sizes: Mapping[str, int]  # {"train": 1437, "validation": 360, "test": 0}
    unit: str = "examples"  # what throughput counts: "examples" or "tokens"
    units_per_step: int = 0


@dataclass(frozen=True)
class CompileStart:
    """Compilation of the train/eval steps begins (shown as its own phase, excluded from ETA)."""


@dataclass(frozen=True)
class CompileEnd:
    seconds: float
    flops_per_step: float | None = None  # from XLA's cost analysis, when available
    cached: bool = False  # True when the compiled steps were reused from an earlier fit


@dataclass(frozen=True)
class Progress:
    """Training progress at the reporting cadence. `metrics` are running means since the last Progress."""

    step: int
    steps_total: int
    epoch: int  # 1-based epoch in progress
    metrics: Mapping[str, float]
    elapsed: float  # seconds of training, compile time excluded
    units_per_s: float  # examples/s or tokens/s, over the last reporting interval
    eta: float | None
    lr: float | None = None


@dataclass(frozen=True)
class Eval:
    """An evaluation on a split ("validation" or "test"); metrics keyed without prefix."""

    step: int
    epoch: int
    split: str
    metrics: Mapping[str, float]


@dataclass(frozen=True)
class EpochEnd:
    """End of an epoch: train means over the epoch and validation metrics, keyed as in `Run.history`."""

    epoch: int
    step: int
    logs: Mapping[str, float]  # {"loss": .., "accuracy": .., "val_loss": .., "val_accuracy": ..}
    elapsed: float


@dataclass(frozen=True)
class FitEnd:
    """Sent exactly once, whatever the ending (also on interrupt or error)."""

    reason: str  # one of END_REASONS
    step: int
    epoch: int
    elapsed: float
    compile_seconds: float
    history: Mapping[str, list] = field(default_factory=dict)
    test_metrics: Mapping[str, float] | None = None
    message: str = ""  # e.g. where a NaN appeared


Event = FitStart | CompileStart | CompileEnd | Progress | Eval | EpochEnd | FitEnd


@runtime_checkable
class Sink(Protocol):
    """A consumer of events. One method; it must be cheap (the loop calls it on the main thread)."""

    def on(self, event: Event) -> None: ...
