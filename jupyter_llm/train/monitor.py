"""Watching one logged quantity across evaluations: early stopping, reduce-on-plateau and best-weight selection.

Keras's EarlyStopping, ReduceLROnPlateau and ModelCheckpoint(save_best_only) in one small object, driven by the loop
after each evaluation; the loop acts on its decisions (stop, halve the learning rate, keep a copy of the weights).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from jupyter_llm.errors import ConfigError

PLATEAU_FACTOR = 0.5


@dataclass
class Decision:
    improved: bool = False
    stop: bool = False
    reduce_lr: bool = False


class Monitor:
    def __init__(self, key: str, mode: str, *, early_stop: int | None = None, plateau: int | None = None):
        self.key, self.mode = key, mode
        self.early_stop, self.plateau = early_stop, plateau
        self.best = math.inf if mode == "min" else -math.inf
        self.best_epoch = 0
        self.waited = 0  # evaluations since the last improvement
        self.plateau_waited = 0

    @classmethod
    def from_config(cls, config, available: set[str]) -> "Monitor | None":
        if config.early_stop is None and config.plateau is None and not config.keep_best:
            return None
        if config.monitor not in available:
            hint = (" There is no validation split: add --val-split 0.2, or monitor a training quantity such as loss."
                    if config.monitor.startswith("val_") and not any(k.startswith("val_") for k in available) else "")
            raise ConfigError(f"--monitor {config.monitor!r} is not logged by this fit; it logs "
                              f"{', '.join(sorted(available))}.{hint}")
        return cls(config.monitor, config.monitor_mode, early_stop=config.early_stop, plateau=config.plateau)

    def update(self, logs: dict, epoch: int) -> Decision:
        value = logs.get(self.key)
        if value is None or not math.isfinite(value):
            return Decision()
        better = value < self.best if self.mode == "min" else value > self.best
        if better:
            self.best, self.best_epoch, self.waited, self.plateau_waited = value, epoch, 0, 0
            return Decision(improved=True)
        self.waited += 1
        self.plateau_waited += 1
        decision = Decision()
        if self.plateau is not None and self.plateau_waited >= self.plateau:
            decision.reduce_lr, self.plateau_waited = True, 0
        if self.early_stop is not None and self.waited >= self.early_stop:
            decision.stop = True
        return decision

    def to_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "waited": self.waited,
                "plateau_waited": self.plateau_waited}

    def load(self, d: dict) -> None:
        self.best, self.best_epoch = d["best"], d["best_epoch"]
        self.waited, self.plateau_waited = d["waited"], d["plateau_waited"]
