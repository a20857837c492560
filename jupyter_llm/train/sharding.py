"""Where arrays live: a `Placement` over a 1-D "data" mesh (one device is a mesh of one).

Data parallelism: the state and the device-resident dataset are replicated, each batch is sharded over the "data"
axis inside the step, and XLA inserts the gradient all-reduce. The mesh uses as many local devices as divide the
batch size, so any batch size works (on fewer devices when it must).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


@dataclass(frozen=True)
class Placement:
    mesh: Mesh
    replicated: NamedSharding
    batch: NamedSharding | None  # None on one device: no constraint needed

    @property
    def num_devices(self) -> int:
        return self.mesh.size

    def describe(self) -> str:
        device = self.mesh.devices.flat[0]
        kind = getattr(device, "device_kind", device.platform)
        total = len(jax.devices())
        used = f" (of {total}: the batch divides over {self.num_devices})" if total != self.num_devices else ""
        kind = "" if kind.lower() == device.platform else f" [{kind}]"
        return f"{device.platform} x {self.num_devices}{used}{kind}"

    def put(self, tree):
        """Replicate a pytree of arrays over the mesh (a plain copy onto the device when there is one)."""
        return jax.device_put(tree, self.replicated)


def data_parallel(batch_size: int, devices=None) -> Placement:
    devices = list(devices or jax.devices())
    n = max(d for d in range(1, len(devices) + 1) if batch_size % d == 0)
    mesh = jax.make_mesh((n,), ("data",), axis_types=(AxisType.Auto,), devices=devices[:n])
    batch = NamedSharding(mesh, P("data")) if n > 1 else None
    return Placement(mesh=mesh, replicated=NamedSharding(mesh, P()), batch=batch)
