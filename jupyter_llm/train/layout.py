"""Where a fit's arrays live: a `Layout` is a device mesh and the shardings of the train state, a batch and the data.

The step and the chunk take every sharding from here, so a new way to spread a model over devices is a new layout,
not a new step. Today's layout is data parallelism over a 1-D "data" mesh (one device is a mesh of one): the state
and the device-resident dataset are replicated, each batch is sharded over the "data" axis inside the step, and XLA
inserts the gradient all-reduce. The mesh uses as many local devices as divide the batch size, so any batch size
works (on fewer devices when it must).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import jax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


def _replicate(path, leaf) -> P:
    return P()


@dataclass(frozen=True)
class Layout:
    mesh: Mesh
    batch_axes: tuple = ()  # mesh axes a batch's first dimension is split over; () leaves batches whole
    # (path, array) -> PartitionSpec of that leaf of the train state; replicated unless a layout says otherwise
    state_rule: Callable = field(default=_replicate, compare=False)

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

    def describe(self) -> str:
        device = self.mesh.devices.flat[0]
        kind = getattr(device, "device_kind", device.platform)
        total = len(jax.devices())
        used = f" (of {total}: the batch divides over {self.num_devices})" if total != self.num_devices else ""
        kind = "" if kind.lower() == device.platform else f" [{kind}]"
        return f"{device.platform} x {self.num_devices}{used}{kind}"


def data_parallel(batch_size: int, devices=None) -> Layout:
    """The replicated-state layout over as many of `devices` (default: all) as divide `batch_size`."""
    devices = list(devices or jax.devices())
    n = max(d for d in range(1, len(devices) + 1) if batch_size % d == 0)
    mesh = jax.make_mesh((n,), ("data",), axis_types=(AxisType.Auto,), devices=devices[:n])
    return Layout(mesh=mesh, batch_axes=("data",) if n > 1 else ())
