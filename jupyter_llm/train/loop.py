"""The training loop as a generator of events.

Host work per dispatch is one compiled call; metrics stay on the device as small arrays until the reporting cadence
(`report_every` seconds of wall time, and every epoch end), where they are read in one transfer. At most
`MAX_IN_FLIGHT` dispatches run ahead of the host, so a stop request is honoured within a chunk or two.
"""

from __future__ import annotations

import collections
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import jax
import numpy as np

from jupyter_llm import events as ev
from jupyter_llm.train.state import TrainState

MAX_IN_FLIGHT = 2


@dataclass
class LoopPlan:
    """Everything the loop needs, prepared and compiled by `fit` (no JAX tracing happens in the loop)."""

    train_chunk: Callable  # compiled (state, data, idx, w, start) -> (state, sums)
    evaluate: Callable  # (state, split_name) -> dict of means
    plan_epoch: Callable  # (epoch, step_limit) -> (idx, w) on device
    train_data: Any
    steps_per_epoch: int  # real steps (the last may be partial)
    steps_per_call: int
    calls_per_epoch: int
    epochs: int
    steps_total: int
    units_per_step: int  # examples (or tokens) per full step
    eval_every: int | None
    has_validation: bool
    derive: Callable = staticmethod(lambda metrics: metrics)  # adds e.g. perplexity from the loss
    report_every: float = 0.25


class Loop:
    """Runs a plan; `state` always holds the newest state whose dispatch was issued (never a deleted buffer)."""

    def __init__(self, plan: LoopPlan, state: TrainState, should_stop: Callable[[], bool]):
        self.plan, self.state, self.should_stop = plan, state, should_stop
        self.step = 0
        self.epoch = 0
        self.elapsed = 0.0
        self.bad_step = -1

    # -- reading device metrics (the only host syncs) -------------------------------------------------------
    def _read(self, pending: list) -> dict[str, float]:
        """Sum pending chunk metrics on the host in float64. This is a device-to-host sync point."""
        if not pending:
            return {}
        host = jax.device_get(pending)
        pending.clear()
        self.bad_step = max(self.bad_step, max(int(s["bad_step"]) for s in host))
        total = {k: float(np.sum([s[k] for s in host], dtype=np.float64)) for k in host[0]
                 if k not in ("bad_step", "step")}
        return total

    @staticmethod
    def _means(total: dict[str, float]) -> dict[str, float]:
        count, steps = total.get("count", 0.0), total.get("steps", 0.0)
        out = {k: v / count for k, v in total.items() if k not in ("count", "steps", "grad_norm") and count}
        if steps:
            out["grad_norm"] = total["grad_norm"] / steps
        return out

    def events(self) -> Iterator[ev.Event]:
        plan = self.plan
        t_start = time.perf_counter()
        last_report, last_step_reported = t_start, 0
        window: dict[str, float] = collections.defaultdict(float)  # since the last Progress
        epoch_sums: dict[str, float] = collections.defaultdict(float)
        pending: list = []
        in_flight: collections.deque = collections.deque()
        reason = ev.COMPLETED

        def absorb(total):
            for k, v in total.items():
                window[k] += v
                epoch_sums[k] += v

        def progress(now):
            nonlocal last_report, last_step_reported
            self.elapsed = now - t_start
            rate_steps = (self.step - last_step_reported) / max(now - last_report, 1e-9)
            overall = self.step / max(self.elapsed, 1e-9)
            eta = (plan.steps_total - self.step) / overall if overall > 0 else None
            metrics = self._means(window)
            window.clear()
            last_report, last_step_reported = now, self.step
            return ev.Progress(step=self.step, steps_total=plan.steps_total, epoch=self.epoch, metrics=metrics,
                               elapsed=self.elapsed, units_per_s=rate_steps * plan.units_per_step, eta=eta)

        for epoch in range(plan.epochs):
            self.epoch = epoch + 1
            limit = min(plan.steps_per_epoch, plan.steps_total - epoch * plan.steps_per_epoch)
            idx, w = plan.plan_epoch(epoch, limit)
            epoch_sums.clear()
            for call in range(plan.calls_per_epoch):
                first = call * plan.steps_per_call
                if first >= limit:
                    break
                self.state, sums = plan.train_chunk(self.state, plan.train_data, idx, w, first)
                pending.append(sums)
                in_flight.append(sums["step"])
                if len(in_flight) > MAX_IN_FLIGHT:
                    in_flight.popleft().block_until_ready()  # bound how far the host runs ahead
                self.step = epoch * plan.steps_per_epoch + min(first + plan.steps_per_call, limit)
                stop = self.should_stop()
                now = time.perf_counter()
                at_eval = plan.eval_every and self.step % plan.eval_every == 0
                if stop or at_eval or now - last_report >= plan.report_every:
                    absorb(self._read(pending))
                    if self.bad_step >= 0:
                        reason = ev.NAN
                        break
                    yield progress(now)
                    if at_eval and plan.has_validation and not stop:
                        yield ev.Eval(self.step, self.epoch, "validation", plan.evaluate(self.state, "validation"))
                if stop:
                    reason = ev.INTERRUPTED
                    break
            if reason != ev.COMPLETED:
                break
            absorb(self._read(pending))
            if self.bad_step >= 0:
                reason = ev.NAN
                break
            now = time.perf_counter()
            if window:
                yield progress(now)
            logs = {k: v for k, v in plan.derive(self._means(epoch_sums)).items() if k != "grad_norm"}
            if plan.has_validation and not plan.eval_every:
                val = plan.evaluate(self.state, "validation")
                yield ev.Eval(self.step, self.epoch, "validation", val)
                logs.update({f"val_{k}": v for k, v in val.items()})
            self.elapsed = time.perf_counter() - t_start
            yield ev.EpochEnd(self.epoch, self.step, logs, self.elapsed)
            if self.step >= plan.steps_total:
                break
        jax.block_until_ready(self.state)
        if reason == ev.NAN:
            self.step = self.bad_step - 1  # the weights are those after the last finite step
        self.elapsed = time.perf_counter() - t_start
        self.reason = reason


def choose_steps_per_call(steps_per_epoch: int, flops_per_step: float, *, eval_every: int | None,
                          requested: int | None, on_cpu: bool, target_seconds: float = 0.1) -> int:
    """Steps per dispatch: enough to hide dispatch overhead, few enough that the display updates a few times a
    second. The padding at an epoch's end is minimised by spreading the steps evenly over the calls."""
    if requested:
        k = requested
    else:
        rate = 5e10 if on_cpu else 2e13  # rough FLOP/s a small model sustains
        k = int(max(1, min(1024, target_seconds * rate / max(flops_per_step, 1.0))))
    k = max(1, min(k, steps_per_epoch))
    if eval_every:
        k = max(d for d in range(1, min(k, eval_every) + 1) if eval_every % d == 0)
    calls = math.ceil(steps_per_epoch / k)
    return math.ceil(steps_per_epoch / calls) if not eval_every else k
