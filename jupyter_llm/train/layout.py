"""Where a fit's arrays live: a `Layout` is a device mesh and the shardings of the train state, a batch and the data.

The step and the chunk take every sharding from here, so a new way to spread a model over devices is a new layout,
not a new step. Two kinds:
- `data_parallel` (the default): a 1-D "data" mesh of as many local devices as divide the batch size; state and the
  device-resident dataset replicated, each batch split over the devices, XLA inserting the gradient all-reduce.
- `from_mesh` (`--mesh data=2,fsdp=2,model=2`): a 3-D mesh. `data` splits the batch; `fsdp` splits the batch too and
  shards parameters and optimizer state (each device holds a slice, XLA gathers a layer's weights when it runs);
  `model` is tensor parallelism (heads and MLP columns, models/partitioning.py). An optimizer moment is sharded like
  its parameter; counters, RNG streams and batch statistics are replicated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import jax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jupyter_llm.errors import ConfigError
from jupyter_llm.models.partitioning import check_tensor_parallel, parameter_specs

AXES = ("data", "fsdp", "model")


@dataclass(frozen=True)
class ParamRule:
    """The spec of every train-state leaf: a parameter's own, the same for an optimizer leaf that mirrors it (its
    path ends with the parameter's path and it has its shape), replicated for everything else. Hashable, so equal
    rules share compiled programs."""

    specs: tuple = ()  # ((param path, shape, spec), ...)

    def __call__(self, path, leaf) -> P:
        if not self.specs:
            return P()
        names = _names(path)
        table = self._table()
        for n in {len(p) for p, _, _ in self.specs}:
            hit = table.get(names[-n:]) if len(names) >= n else None
            if hit is not None and hit[0] == tuple(getattr(leaf, "shape", ())):
                return P(*hit[1])
        return P()

    def _table(self) -> dict:
        table = self.__dict__.get("_lookup")
        if table is None:
            table = {p: (shape, spec) for p, shape, spec in self.specs}
            object.__setattr__(self, "_lookup", table)
        return table


def _names(path) -> tuple:
    out = []
    for k in path:
        out.append(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))))
    while out and out[-1] in ("value", "raw_value"):
        out.pop()
    return tuple(out)


@dataclass(frozen=True)
class Layout:
    mesh: Mesh
    batch_axes: tuple = ()  # mesh axes a batch's first dimension is split over; () leaves batches whole
    # (path, array) -> PartitionSpec of that leaf of the train state; replicated unless a layout says otherwise
    state_rule: Callable = ParamRule()

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, P())

    @property
    def batch(self) -> NamedSharding | None:
        """The sharding of a batch (first dimension over `batch_axes`); None when a batch is not split."""
        return NamedSharding(self.mesh, P(self.batch_axes)) if self.batch_axes else None

    @property
    def num_devices(self) -> int:
        return self.mesh.size

    @property
    def processes(self) -> int:
        """How many processes own the mesh's devices (1 unless jl.distributed joined several)."""
        return len({d.process_index for d in self.mesh.devices.flat})

    @property
    def platform(self) -> str:
        return self.mesh.devices.flat[0].platform

    def state_shardings(self, state):
        """The sharding of every leaf of a train state (or of params alone), as a pytree like it."""
        return jax.tree_util.tree_map_with_path(lambda path, a: NamedSharding(self.mesh, self.state_rule(path, a)),
                                                state)

    def constrain_batch(self, x):
        """Inside a compiled step: tell XLA how a gathered batch is split over the devices."""
        return x if self.batch is None else jax.lax.with_sharding_constraint(x, self.batch)

    def put(self, tree):
        """Replicate a pytree of arrays over the mesh (a plain copy onto the device when there is one)."""
        return jax.device_put(tree, self.replicated)

    def put_state(self, state):
        return jax.device_put(state, self.state_shardings(state))

    def axis_sizes(self) -> dict[str, int]:
        return dict(self.mesh.shape)

    def describe(self) -> str:
        device = self.mesh.devices.flat[0]
        kind = getattr(device, "device_kind", device.platform)
        total = len(jax.devices())
        sizes = self.axis_sizes()
        if len(sizes) > 1:
            used = " (of %d)" % total if total != self.num_devices else ""
            used += " mesh " + ",".join(f"{a}={n}" for a, n in sizes.items())
        else:
            used = f" (of {total}: the batch divides over {self.num_devices})" if total != self.num_devices else ""
        kind = "" if kind.lower() == device.platform else f" [{kind}]"
        return f"{device.platform} x {self.num_devices}{used}{kind}"

    def bytes_per_device(self, tree) -> int:
        """The bytes of `tree` (arrays or their shapes) that each device holds under this layout."""
        total = 0
        for sharding, leaf in zip(jax.tree.leaves(self.state_shardings(tree)), jax.tree.leaves(tree)):
            total += math.prod(sharding.shard_shape(tuple(leaf.shape))) * leaf.dtype.itemsize
        return total



def data_parallel(batch_size: int, devices=None) -> Layout:
    """The replicated-state layout over as many of `devices` (default: all) as divide `batch_size`."""
    devices = list(devices or jax.devices())
    n = max(d for d in range(1, len(devices) + 1) if batch_size % d == 0)
    mesh = jax.make_mesh((n,), ("data",), axis_types=(AxisType.Auto,), devices=devices[:n])
    return Layout(mesh=mesh, batch_axes=("data",) if n > 1 else ())


def from_mesh(sizes: dict[str, int], batch_size: int, model, devices=None) -> Layout:
    """The layout of a `--mesh`: `sizes` maps data/fsdp/model to their sizes (missing ones are 1)."""
    devices = list(devices or jax.devices())
    shape = tuple(int(sizes.get(a, 1)) for a in AXES)
    wanted = math.prod(shape)
    text = ",".join(f"{a}={n}" for a, n in zip(AXES, shape))
    if wanted > len(devices):
        raise ConfigError(f"The mesh {text} needs {wanted} devices; there are {len(devices)} "
                          f"({devices[0].platform}). Make the sizes multiply to {len(devices)} or fewer.")
    split = shape[0] * shape[1]
    if batch_size % split:
        raise ConfigError(f"The batch of {batch_size} does not split over the mesh's data x fsdp = {split} "
                          f"devices; use a batch size that is a multiple of {split}.")
    check_tensor_parallel(model, shape[2])
    mesh = jax.make_mesh(shape, AXES, axis_types=(AxisType.Auto,) * 3, devices=devices[:wanted])
    specs = parameter_specs(model, dict(zip(AXES, shape)))
    rule = ParamRule(tuple(sorted(((path, shape, spec) for path, (shape, spec) in specs.items()),
                                  key=lambda item: tuple(map(str, item[0])))))
    return Layout(mesh=mesh, batch_axes=tuple(a for a, n in zip(AXES[:2], shape[:2]) if n > 1), state_rule=rule)

