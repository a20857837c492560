"""XLA:CPU's per-dispatch scratch stays mapped: malloc's thresholds are raised above it (Linux with glibc)."""

import json
import os
import platform
import subprocess
import sys

import jax
import pytest

import jupyter_llm as jl
from jupyter_llm.fitting import program
from jupyter_llm.train import host_memory
from tests.helpers import mlp

glibc = pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                           reason="mallopt is glibc's")

# In a fresh process: page faults of a second 80 MB block after one was freed, before and after the call.
PROBE = """
import json, resource, sys
import numpy as np
from jupyter_llm.train import host_memory

def refault():
    np.ones(80 * 2**20, np.uint8)  # allocated, touched, freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    np.ones(80 * 2**20, np.uint8)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

first = refault()
threshold = host_memory.keep_scratch_mapped(80 * 2**20)
refault()
print(json.dumps({"before": first, "threshold": threshold, "after": refault()}))
"""


def probe(**env) -> dict:
    env = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@glibc
def test_scratch_freed_and_allocated_again_is_not_faulted_in_again():
    got = probe(JUPYTER_LLM_MALLOPT=None, MALLOC_MMAP_THRESHOLD_=None, MALLOC_TRIM_THRESHOLD_=None)
    assert got["threshold"] == 128 * 2**20  # 80 MB with headroom, to a power of two
    assert got["before"] >= 20  # fresh pages from the kernel (20,480 pages; 40 with transparent huge pages)
    assert got["after"] <= got["before"] // 10  # the heap's pages, reused


@glibc
@pytest.mark.parametrize("env", [{"JUPYTER_LLM_MALLOPT": "0"}, {"MALLOC_MMAP_THRESHOLD_": "1048576"}])
def test_malloc_is_left_alone_when_asked_or_when_the_user_tuned_it(env):
    got = probe(**env)
    assert got["threshold"] == 0 and got["after"] >= 20


@pytest.mark.skipif(jax.devices()[0].platform != "cpu", reason="the scratch that matters is host memory")
def test_small_scratch_needs_no_change_and_a_cpu_fit_passes_its_programs_scratch(monkeypatch, digits):
    assert host_memory.keep_scratch_mapped(1 << 20) in (0, host_memory._set_to)  # under glibc's own ceiling
    seen = []
    monkeypatch.setattr(host_memory, "keep_scratch_mapped", seen.append)
    # compiled here, not taken from an earlier test's session cache
    monkeypatch.setattr(program, "COMPILED", program.CompiledPrograms())
    x, y = digits.train
    jl.fit(mlp(), (x[:256], y[:256]), epochs=1, display="none")
    assert len(seen) == 1 and isinstance(seen[0], int) and seen[0] > 0
