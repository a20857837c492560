"""The training loop as a generator of events.

Host work per dispatch is one compiled call; metrics stay on the device as small arrays until the reporting cadence
(`report_every` seconds of wall time, and every epoch end), where they are read in one transfer. At most
`MAX_IN_FLIGHT` dispatches run ahead of the host, so a stop request is honoured within a chunk or two. A chunk the
compiled path could not take whole (a non-finite step inside) is found when the host waits for it, and redone step by
step (`redo_chunk`), together with the chunks dispatched after it, which left the state alone (train/chunk.py).
The loop can start mid-fit (`Position`), which is how resuming gives the same history as an uninterrupted fit.
"""

from __future__ import annotations

import collections
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Generator

import jax
import jax.numpy as jnp
import numpy as np

from jupyter_llm import events as ev
from jupyter_llm.train.monitor import PLATEAU_FACTOR, Monitor
from jupyter_llm.train.schedule import scale_for
from jupyter_llm.train.state import TrainState

MAX_IN_FLIGHT = 2
_NOT_SUMMED = ("bad_step", "step", "skipped", "held")
_PER_STEP = ("grad_norm", "update_ratio")  # averaged over the sampled steps, not examples


@dataclass
class Position:
    """Where a fit stands between two dispatches: enough to continue it exactly."""

    epoch: int = 0  # 0-based epoch in progress
    dispatch: int = 0  # next dispatch of that epoch
    step: int = 0  # steps completed
    epoch_sums: dict = field(default_factory=dict)  # metric sums of the epoch so far
    monitor: dict | None = None
    steps_per_dispatch: int | None = None  # `dispatch` counts dispatches of this many steps
    lr_scale: float = 1.0  # the learning rate's multiplier so far (reduce-on-plateau's, and `run.set(lr=...)`'s)
    numbers: dict = field(default_factory=dict)  # clip / weight_decay as set while the fit ran

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "dispatch": self.dispatch, "step": self.step, "epoch_sums": dict(self.epoch_sums),
                "monitor": self.monitor, "steps_per_dispatch": self.steps_per_dispatch, "lr_scale": self.lr_scale,
                "numbers": dict(self.numbers)}

    @classmethod
    def from_dict(cls, d: dict) -> "Position":
        return cls(d["epoch"], d["dispatch"], d["step"], dict(d.get("epoch_sums") or {}), d.get("monitor"),
                   d.get("steps_per_dispatch"), float(d.get("lr_scale", 1.0)),
                   {k: float(v) for k, v in (d.get("numbers") or {}).items()})


@dataclass
class LoopPlan:
    """Everything the loop needs, prepared and compiled by `fit` (no JAX tracing happens in the loop, except
    `redo_chunk`'s the first time a fit has a chunk to redo)."""

    train_chunk: Callable  # compiled (state, data, idx, w, start, hyper) -> (state, sums)
    redo_chunk: Callable  # (state, data, idx, w, start, hyper) -> (state, sums): a held chunk, step by step
    evaluate: Callable  # (state, split_name) -> dict of means
    plan_epoch: Callable  # (epoch, step_limit) -> (idx, w) on device
    train_data: Any
    steps_per_epoch: int  # real steps (the last may be partial)
    steps_per_dispatch: int
    dispatches_per_epoch: int
    epochs: int
    steps_total: int
    units_per_step: int  # examples (or tokens) per full step
    eval_every: int | None
    has_validation: bool
    derive: Callable = staticmethod(lambda metrics: metrics)  # adds e.g. perplexity from the loss
    hyper: Callable = None  # (lr scale, numbers) -> the optimizer's numbers on the device (train/optim.py)
    lr_at: Callable | None = None  # (step, lr scale) -> the learning rate (host-side), None when unknown
    monitor: Monitor | None = None
    keep_best: bool = False
    save: Callable | None = None  # (state, Position) -> None: a checkpoint at a save point
    save_every: int | None = None  # steps between saves (None: at each epoch end)
    report_every: float = 0.25
    profile: tuple | None = None  # (steps, directory): a JAX profiler trace of the first steps
    sample: Callable | None = None  # state -> (prompt, text): a language model's sample (--sample-every)
    sample_every: int | None = None


@dataclass(frozen=True)
class Outcome:
    """How a loop ended: one of the events module's reasons, and what the end-of-fit line adds to it."""

    reason: str
    message: str = ""


@dataclass
class _Cadence:
    """When the last Progress went out, and the steps this loop has run (for the rate and the ETA)."""

    last_report: float
    last_step: int
    steps_done: int = 0


def run_to_end(events: Generator[ev.Event, None, Outcome], emit: Callable[[ev.Event], None]) -> Outcome:
    """Send every event of `events` to `emit`; the loop's outcome."""
    while True:
        try:
            event = next(events)
        except StopIteration as end:
            return end.value
        emit(event)


class Loop:
    """Runs a plan; `state` always holds the newest state whose dispatch was issued (never a deleted buffer)."""

    def __init__(self, plan: LoopPlan, state: TrainState, should_stop: Callable[[], bool],
                 start: Position | None = None, steer: Callable[[int, Callable], dict] | None = None):
        """`steer(step, weights)`, called between dispatches, may wait (a pause) and returns the numbers to change
        now; `weights()` gives it a device copy of the weights at `step` (a snapshot someone asked for)."""
        self.plan, self.state, self.should_stop, self.steer = plan, state, should_stop, steer
        self.start = start or Position()
        self.position = Position(**vars(self.start))
        self.step = self.start.step
        self.epoch = self.start.epoch
        self.elapsed = 0.0
        self.bad_step = -1
        self.skipped = 0
        self.lr_scale = self.start.lr_scale
        self.numbers = dict(self.start.numbers)
        self.hyper = plan.hyper(self.lr_scale, self.numbers)
        self.best = None  # (params, rest) at the monitor's best evaluation, with keep_best
        self._in_flight: collections.deque = collections.deque()  # (sums, chunk arguments) not yet waited for
        if plan.monitor is not None and self.start.monitor:
            plan.monitor.load(self.start.monitor)

    # -- reading device metrics (the only host syncs) -------------------------------------------------------
    def _read(self, pending: list) -> dict[str, float]:
        """Sum pending chunk metrics on the host in float64. This is a device-to-host sync point."""
        self._settle(pending, keep=0)
        if not pending:
            return {}
        host = jax.device_get(pending)
        pending.clear()
        self.bad_step = max(self.bad_step, max(int(s["bad_step"]) for s in host))
        self.skipped = max(self.skipped, max(int(s["skipped"]) for s in host))
        return {k: float(np.sum([s[k] for s in host], dtype=np.float64)) for k in host[0] if k not in _NOT_SUMMED}

    def _settle(self, pending: list, keep: int) -> None:
        """Wait for the oldest dispatched chunks until `keep` are left in flight. A chunk that came back held is
        redone step by step from the state it left, then the chunks dispatched after it, which left that state
        alone, are dispatched again (and checked in their turn); their metric sums replace the discarded ones."""
        plan, in_flight = self.plan, self._in_flight
        while len(in_flight) > keep:
            if not bool(in_flight[0][0]["held"]):  # a device-to-host sync on this chunk (its flag is one scalar)
                in_flight.popleft()
                continue
            redo = list(in_flight)
            in_flight.clear()
            for n, (old, args) in enumerate(redo):
                chunk = plan.redo_chunk if n == 0 else plan.train_chunk
                self.state, new = chunk(self.state, plan.train_data, *args)
                pending[next(i for i, s in enumerate(pending) if s is old)] = new
                if n:
                    in_flight.append((new, args))

    @staticmethod
    def _means(total: dict[str, float]) -> dict[str, float]:
        count, measured = total.get("count", 0.0), total.get("measured", 0.0)
        out = {k: v / count for k, v in total.items()
               if k not in ("count", "measured", *_PER_STEP) and count}
        for k in _PER_STEP:  # sampled at the last step of each dispatch
            if measured and k in total:
                out[k] = total[k] / measured
        return out

    def weights(self):
        """A device copy of the newest state's (params, rest), made before the next dispatch donates them: an
        asynchronous copy, no host sync."""
        return jax.tree.map(jnp.copy, (self.state.params, self.state.rest))

    def _lr(self) -> float | None:
        return None if self.plan.lr_at is None else self.plan.lr_at(self.step, self.lr_scale)

    def events(self) -> Generator[ev.Event, None, Outcome]:
        """The fit's events, in order; the generator's return value is how it ended (`run_to_end` hands it back)."""
        plan, pos = self.plan, self.position
        t_start = time.perf_counter()
        cadence = _Cadence(last_report=t_start, last_step=self.step)
        window: dict[str, float] = collections.defaultdict(float)  # since the last Progress
        epoch_sums: dict[str, float] = collections.defaultdict(float, pos.epoch_sums)
        pending: list = []
        reason = ev.COMPLETED

        def absorb(total):
            for k, v in total.items():
                window[k] += v
                epoch_sums[k] += v

        def progress(now):
            self.elapsed = now - t_start
            rate_steps = (self.step - cadence.last_step) / max(now - cadence.last_report, 1e-9)
            overall = cadence.steps_done / max(self.elapsed, 1e-9)
            eta = (plan.steps_total - self.step) / overall if overall > 0 else None
            metrics = self._means(window)
            window.clear()
            cadence.last_report, cadence.last_step = now, self.step
            return ev.Progress(step=self.step, steps_total=plan.steps_total, epoch=self.epoch, metrics=metrics,
                               elapsed=self.elapsed, units_per_s=rate_steps * plan.units_per_step, eta=eta,
                               lr=self._lr())

        def remember(next_epoch, next_dispatch):
            pos.epoch, pos.dispatch, pos.step = next_epoch, next_dispatch, self.step
            pos.steps_per_dispatch = plan.steps_per_dispatch
            pos.epoch_sums = dict(epoch_sums)
            pos.monitor = plan.monitor.to_dict() if plan.monitor else None
            pos.lr_scale, pos.numbers = self.lr_scale, dict(self.numbers)

        profiler = _Profiler(*plan.profile, first_step=self.step) if plan.profile else None
        first_epoch = self.start.epoch
        if self.should_stop() and first_epoch < plan.epochs:  # asked for during compilation: nothing trains
            reason, first_epoch = ev.INTERRUPTED, plan.epochs
            if plan.save is not None and self.start.step == 0:  # a resumed fit's checkpoint is there already
                remember(self.start.epoch, self.start.dispatch)
                plan.save(self.state, pos)
        for epoch in range(first_epoch, plan.epochs):
            self.epoch = epoch + 1
            limit = min(plan.steps_per_epoch, plan.steps_total - epoch * plan.steps_per_epoch)
            idx, w = plan.plan_epoch(epoch, limit)
            first_dispatch = self.start.dispatch if epoch == self.start.epoch else 0
            if epoch != self.start.epoch:
                epoch_sums.clear()
            for dispatch in range(first_dispatch, plan.dispatches_per_epoch):
                first = dispatch * plan.steps_per_dispatch
                if first >= limit:
                    break
                self.state, sums = plan.train_chunk(self.state, plan.train_data, idx, w, first, self.hyper)
                pending.append(sums)
                self._in_flight.append((sums, (idx, w, first, self.hyper)))
                self._settle(pending, keep=MAX_IN_FLIGHT)  # bound how far the host runs ahead
                before = self.step
                self.step = epoch * plan.steps_per_epoch + min(first + plan.steps_per_dispatch, limit)
                cadence.steps_done += self.step - before
                if profiler is not None:
                    profiler.after(self.step, self.state)
                if self.steer is not None:
                    changes = self._apply(self.steer(self.step, self.weights))
                    if changes:
                        yield ev.Control(self.step, changes)
                stop = self.should_stop()
                now = time.perf_counter()
                at_eval = bool(plan.eval_every) and self.step % plan.eval_every == 0
                at_save = plan.save is not None and bool(plan.save_every) and (
                    self.step // plan.save_every > before // plan.save_every)
                if stop or at_eval or at_save or now - cadence.last_report >= plan.report_every:
                    absorb(self._read(pending))
                    if self.bad_step >= 0:
                        reason = ev.NAN
                        break
                    yield progress(now)
                    if at_eval and plan.has_validation and not stop:
                        yield ev.Eval(self.step, self.epoch, "validation", plan.evaluate(self.state, "validation"))
                    remember(epoch, dispatch + 1)
                    if at_save or (stop and plan.save is not None):
                        plan.save(self.state, pos)
                if stop:
                    reason = ev.INTERRUPTED
                    break
            if reason != ev.COMPLETED:
                break
            absorb(self._read(pending))
            if self.bad_step >= 0:
                reason = ev.NAN
                break
            if window:
                yield progress(time.perf_counter())
            logs = plan.derive(self._means(epoch_sums))  # incl. grad_norm, update_ratio: gradient health
            if plan.has_validation and not plan.eval_every:
                val = plan.evaluate(self.state, "validation")
                yield ev.Eval(self.step, self.epoch, "validation", val)
                logs.update({f"val_{k}": v for k, v in val.items()})
            self.elapsed = time.perf_counter() - t_start
            yield ev.EpochEnd(self.epoch, self.step, logs, self.elapsed)
            if plan.sample and self.step // plan.sample_every > (self.step - limit) // plan.sample_every:
                yield ev.Sample(self.step, *plan.sample(self.state))
            stop_early = self._watch(logs)
            epoch_sums.clear()
            remember(epoch + 1, 0)
            if plan.save is not None and not plan.save_every:
                plan.save(self.state, pos)
            if stop_early:
                reason = ev.EARLY_STOPPED
                break
            if self.step >= plan.steps_total:
                break
        jax.block_until_ready(self.state)
        if profiler is not None:
            profiler.stop()
        if reason == ev.NAN:
            self.step = self.bad_step - 1  # the weights are those after the last finite step
        self.elapsed = time.perf_counter() - t_start
        return Outcome(reason, self._explain(reason))

    def _explain(self, reason: str) -> str:
        """What the end-of-fit line says besides the reason."""
        plan, notes = self.plan, []
        if reason == ev.NAN:
            notes.append(f"loss or weights not finite at step {self.bad_step}; weights kept from step {self.step}. "
                         "A lower learning rate (--lr), gradient clipping (--clip 1.0) or a warm-up (--warmup) "
                         "usually cures a diverging fit; --skip-nonfinite N skips up to N bad updates")
        elif reason == ev.EARLY_STOPPED and plan.monitor:
            m = plan.monitor
            notes.append(f"no improvement of {m.key} for {m.waited} evaluations (best {m.best:.4g} at epoch "
                         f"{m.best_epoch})")
        if self.skipped:
            notes.append(f"skipped {self.skipped} non-finite updates")
        if plan.keep_best and self.best is not None and plan.monitor:
            notes.append(f"restored the best weights ({plan.monitor.key} {plan.monitor.best:.4g} at epoch "
                         f"{plan.monitor.best_epoch})")
        return "; ".join(notes)

    def _watch(self, logs: dict) -> bool:
        """Apply the monitor's decision after an evaluation; True when the fit should stop early."""
        monitor = self.plan.monitor
        if monitor is None:
            return False
        decision = monitor.update(logs, self.epoch)
        if decision.improved and self.plan.keep_best:
            self.best = jax.tree.map(jnp.copy, (self.state.params, self.state.rest))  # device copy, async
        if decision.reduce_lr:
            self.lr_scale *= PLATEAU_FACTOR
            self.hyper = self.plan.hyper(self.lr_scale, self.numbers)
        return decision.stop

    def _apply(self, changes: dict | None) -> dict:
        """New numbers for the next dispatch (checked by the caller): a learning rate becomes the multiplier that
        gives it at this step, so the schedule goes on from there in proportion. No recompilation: the numbers are
        arguments of the compiled step. Returns what changed."""
        if not changes:
            return {}
        done = {}
        for key, value in changes.items():
            if key == "lr":
                base = self.plan.lr_at(self.step, 1.0) if self.plan.lr_at else 0.0
                scale = scale_for(float(value), base)
                if scale is None:  # refused where it is asked for (run.set); here only if the rate fell to 0 since
                    warnings.warn(f"run.set(lr={value:g}) was not applied at step {self.step}: the schedule's "
                                  f"learning rate there is {base:g}, and a learning rate set while a fit runs "
                                  "multiplies the schedule, which leaves 0 at 0.", RuntimeWarning, stacklevel=2)
                    continue
                self.lr_scale = scale
                done["lr"] = float(value)
            else:
                self.numbers[key] = done[key] = float(value)
        if done:
            self.hyper = self.plan.hyper(self.lr_scale, self.numbers)
        return done


class _Profiler:
    """A JAX profiler trace (TensorBoard's profile plugin reads it) of the first `steps` steps of the loop."""

    def __init__(self, steps: int, directory: str, first_step: int):
        self.until = first_step + steps
        self.directory = directory
        jax.profiler.start_trace(directory)
        self.running = True

    def after(self, step: int, state) -> None:
        if self.running and step >= self.until:
            jax.block_until_ready(state)  # the traced steps must have run
            self.stop()

    def stop(self) -> None:
        if self.running:
            self.running = False
            jax.profiler.stop_trace()


def choose_steps_per_dispatch(steps_per_epoch: int, flops_per_step: float, *, eval_every: int | None,
                          given: int | None, on_cpu: bool, convolutions: bool = False,
                          target_seconds: float = 0.4) -> int:
    """Steps per dispatch: enough to hide dispatch overhead, few enough that the display updates a few times a
    second. Several steps per dispatch also make each step faster: the char GPT on 2 CPU cores ran 75-79 ms/step
    at 1 step per dispatch and 46-56 at 5, 10 or 20, with no difference between those three beyond this machine's
    noise (per-chunk work and the host's syncs amortised; scratch A/B, interleaved, 3 rounds each).
    The steps are spread evenly over an epoch's calls; the last, shorter chunk runs only its real steps.
    A model with native convolutions (`convolutions`) gets one step per call on a CPU unless told otherwise: XLA:CPU
    runs them inside a loop several times slower (jax-ml/jax#12868; a classic two-conv MNIST net at batch 32, 4,000
    random images: 2.3 s per epoch at one step per call, 15 at 8 per call, 16 at the cost-based count)."""
    if given:
        k = given
    elif convolutions and on_cpu:
        k = 1
    else:
        rate = 5e10 if on_cpu else 2e13  # rough FLOP/s a small model sustains
        k = int(max(1, min(1024, target_seconds * rate / max(flops_per_step, 1.0))))
    k = max(1, min(k, steps_per_epoch))
    if eval_every:
        k = max(d for d in range(1, min(k, eval_every) + 1) if eval_every % d == 0)
        return k
    calls = math.ceil(steps_per_epoch / k)
    return math.ceil(steps_per_epoch / calls)
