"""Several processes, one fit: JAX's distributed runtime, joined before the first JAX computation.

`init()` wraps `jax.distributed.initialize`: with no arguments JAX finds the cluster itself (SLURM, TPU pods, Open
MPI and the other launchers it knows); on a plain set of machines, or several processes on one, give the
coordinator's address, the number of processes and this one's id. After it, `jax.devices()` lists every process's
devices, so a fit's mesh spans them all; each process runs the same program on its own devices (every one gathers
its part of each batch from the dataset each process holds), and only process 0 displays, logs and writes files.
"""

from __future__ import annotations

import sys

from jupyter_llm.errors import ConfigError


def init(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None, *,
         local_devices: int | None = None, timeout: int = 300) -> None:
    """Join (or start, as process 0) the distributed runtime. `local_devices`: on a CPU, how many devices this
    process simulates (what `XLA_FLAGS=--xla_force_host_platform_device_count` does), for tests and trials."""
    import jax

    given = [v is not None for v in (coordinator, num_processes, process_id)]
    if any(given) and not all(given):
        raise ConfigError("Give all three of --coordinator HOST:PORT, --num-processes N and --process-id I (or "
                          "none, where JAX detects the cluster: SLURM, TPU pods, Open MPI).")
    if num_processes is not None and not (isinstance(num_processes, int) and num_processes >= 1):
        raise ConfigError(f"--num-processes must be a whole number of at least 1, got {num_processes!r}.")
    if process_id is not None and not (isinstance(process_id, int) and 0 <= process_id < num_processes):
        raise ConfigError(f"--process-id must be between 0 and --num-processes - 1 = {num_processes - 1}, got "
                          f"{process_id!r}.")
    if coordinator is not None and (":" not in coordinator or not coordinator.rsplit(":", 1)[1].isdigit()):
        raise ConfigError(f"--coordinator must be HOST:PORT (e.g. 10.0.0.1:1234), got {coordinator!r}.")
    try:
        if local_devices is not None:
            simulate_cpu_devices(local_devices)
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id, initialization_timeout=timeout)
    except RuntimeError as exc:
        if "before" in str(exc) or "already" in str(exc):
            raise ConfigError("The distributed runtime must start before JAX does anything else: call "
                              "jl.distributed.init() first thing in the process (in a notebook, restart the "
                              f"kernel). JAX said: {str(exc).splitlines()[0]}") from None
        raise


def simulate_cpu_devices(n: int) -> None:
    """Make this process's CPU appear as `n` devices (before JAX starts), to try a mesh without accelerators."""
    import jax

    if not isinstance(n, int) or n < 1:
        raise ConfigError(f"--local-devices must be a whole number of at least 1, got {n!r}.")
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError as exc:
        raise ConfigError(f"--local-devices must be set before JAX starts; JAX said: {exc}") from None


def is_main() -> bool:
    """True in the process that displays, logs and writes files (process 0; the only one without `init`)."""
    if "jax" not in sys.modules:
        return True
    import jax

    return jax.process_index() == 0


def process_count() -> int:
    import jax

    return jax.process_count()

