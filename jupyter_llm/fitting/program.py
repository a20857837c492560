"""The compiled programs of a fit — train chunk, epoch plan, one evaluation per split — and the session's cache of
them, so re-running a cell with other numbers (--lr, --epochs, a schedule) reuses what it compiled before.

Compiling ahead of time makes compilation its own phase (the display shows it), and gives XLA's cost and memory
analyses: the FLOPs per step, and the scratch each program allocates (on CPU, glibc is told to keep that mapped).
"""

from __future__ import annotations

import collections
import math
import time
from dataclasses import dataclass

import jax

from jupyter_llm import events as ev
from jupyter_llm.errors import ConfigError
from jupyter_llm.train import host_memory
from jupyter_llm.train.chunk import Chunks, make_chunks
from jupyter_llm.train.metrics import metrics_key
from jupyter_llm.train.state import init_state


class CompiledPrograms:
    """The session's compiled programs, keyed by everything that shapes them, newest `limit` kept: each entry holds
    executables, and a notebook that tries one model after another must not keep them all."""

    def __init__(self, limit: int = 8):
        self.limit = limit
        self._entries: collections.OrderedDict = collections.OrderedDict()

    def get(self, key):
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key, entry) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.limit:
            self._entries.popitem(last=False)

    def values(self) -> list:
        return list(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)


COMPILED = CompiledPrograms()


@dataclass
class Program:
    chunks: Chunks  # the jitted functions (redo and predict compile on first use)
    executables: dict  # "train", "plan", and one per evaluated split: compiled ahead of time
    flops_per_step: float | None
    memory: dict  # bytes per device, part by part (memory_per_device)

    def evaluate_sums(self, split: str, params, rest, source) -> dict:
        idx, w = source.eval_plans[split]
        return self.executables[split](params, rest, source.device[split], idx, w)


def cache_key(prepared) -> tuple:
    """Everything that shapes the compiled programs — and nothing that is only a number the step receives."""
    c, src, layout = prepared.config, prepared.source, prepared.layout
    shapes = tuple((k, tuple(a.shape), str(a.dtype)) for k, arrs in src.device.items() for a in jax.tree.leaves(arrs))
    plans = tuple((k, tuple(p[0].shape)) for k, p in src.eval_plans.items())
    return (prepared.graphdef_train, prepared.graphdef_eval, prepared.trainable, prepared.optimizer.key,
            prepared.loss_name,
            c.label_smoothing, c.skip_nonfinite, prepared.precision, prepared.augment,
            id(prepared.loss_fn) if callable(c.loss) else 0,  # a user's loss: that function; a named one: its name
            metrics_key(c.metrics),
            type(src), getattr(src, "block_size", None), prepared.steps_per_dispatch, c.batch_size,
            prepared.padded_steps, shapes, plans, layout.mesh, layout.batch_axes, layout.state_rule)


def compile_program(prepared) -> tuple[Program, ev.CompileEnd]:
    """Compile the train chunk, the evaluations and the epoch plan ahead of time, or reuse this session's."""
    t0 = time.perf_counter()
    key = cache_key(prepared)
    if (program := COMPILED.get(key)) is not None:
        return program, ev.CompileEnd(seconds=time.perf_counter() - t0, flops_per_step=program.flops_per_step,
                                      cached=True, memory=program.memory)
    src, layout, c = prepared.source, prepared.layout, prepared.config
    state = jax.eval_shape(lambda p, r: init_state(p, r, prepared.optimizer, copy=False), prepared.params,
                           prepared.rest)
    chunks = make_chunks(prepared.step, layout, state, prepared.steps_per_dispatch, gather=src.gather,
                         skip_nonfinite=c.skip_nonfinite)
    plan = jax.jit(prepared.plan, out_shardings=layout.replicated)
    idx, w = jax.eval_shape(plan, prepared.data_key, 0, 1)
    executables = {"train": chunks.train.lower(state, src.device["train"], idx, w, 0, prepared.hyper(1.0)).compile(),
                   "plan": plan.lower(prepared.data_key, 0, 1).compile()}
    for name, (pidx, pw) in src.eval_plans.items():
        executables[name] = chunks.evaluate.lower(prepared.params, prepared.rest, src.device[name], pidx,
                                                  pw).compile()
    flops = _flops_per_step(executables["train"])
    scratch = max(_scratch_bytes(e) for e in executables.values())
    if layout.platform == "cpu":
        host_memory.keep_scratch_mapped(scratch)
    program = Program(chunks, executables, flops, memory_per_device(prepared, state, scratch))
    check_fits_in_memory(program.memory, layout)
    COMPILED.put(key, program)
    return program, ev.CompileEnd(seconds=time.perf_counter() - t0, flops_per_step=flops, memory=program.memory)


def memory_per_device(prepared, state, scratch: int) -> dict[str, int]:
    """What one device holds during the fit, part by part: the layout's share of the parameters and optimizer state
    (a sharded leaf counts its slice), the device-resident data (replicated), and the train program's temporaries
    (XLA's memory analysis)."""
    layout = prepared.layout
    data = sum(math.prod(a.shape) * a.dtype.itemsize for a in jax.tree.leaves(prepared.source.device))
    return {"parameters": layout.bytes_per_device(state.params), "optimizer state":
            layout.bytes_per_device(state.opt_state), "data": int(data), "step temporaries": int(scratch)}


def check_fits_in_memory(memory: dict, layout) -> None:
    """Refuse, with the estimate and what would help, a fit whose state and step will not fit in device memory
    (where the device says how much it has: GPUs and TPUs; a CPU's memory is the host's)."""
    local = [d for d in layout.mesh.devices.flat if d.process_index == jax.process_index()]
    stats = (local[0].memory_stats() if local else None) or {}
    limit = stats.get("bytes_limit")
    need = sum(memory.values())
    if limit and need > 0.95 * limit:
        raise ConfigError(f"This fit needs about {need / 2**30:.2f} GiB per device (" + ", ".join(
            f"{k} {v / 2**30:.2f}" for k, v in memory.items()) + f" GiB) and a device has {limit / 2**30:.2f} GiB. "
            "Shard the parameters and optimizer state over more devices (--mesh fsdp=N), use a smaller "
            "--batch-size, or keep the batch with --accumulate N over smaller ones.")


def _scratch_bytes(compiled) -> int:
    """The temporary buffers one execution of `compiled` allocates (0 where XLA does not say)."""
    try:
        return int(compiled.memory_analysis().temp_size_in_bytes)
    except Exception:  # noqa: BLE001 - an analysis some backends lack
        return 0


def _flops_per_step(compiled) -> float | None:
    """XLA's cost analysis of the train chunk, as the display has always reported it (not divided by the steps per
    dispatch: XLA does not multiply a loop body by its dynamic trip count)."""
    try:
        cost = compiled.cost_analysis()
        if isinstance(cost, (list, tuple)):
            cost = cost[0]
        flops = float(cost.get("flops", 0.0))
    except Exception:  # noqa: BLE001 - cost analysis is optional information
        return None
    return flops or None
