"""Several processes, one fit: two command-line processes with 4 CPU devices each train like one process with 8.

JAX's distributed runtime joins the processes over localhost (gloo collectives on CPU); the mesh spans all 8
devices either way, so the histories agree to float reduction order. Only process 0 prints, logs and writes.
"""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

TRAIN = ["-m", "jupyter_llm", "train", "--model", "mlp", "--data", "digits", "--epochs", "3", "--batch-size", "64",
         "--val-split", "0.2", "--lr", "1e-2", "--seed", "0"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(extra, logdir):
    env = dict(os.environ, JUPYTER_LLM_COMPILE_CACHE="0")
    env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f)
    return subprocess.Popen([sys.executable, *TRAIN, "--logdir", str(logdir), *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def finish(proc) -> tuple[str, str]:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return out, err


@pytest.fixture(scope="module")
def fits(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multi_host")
    port = free_port()
    joined = [start(["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i),
                     "--local-devices", "4"], tmp / f"p{i}") for i in range(2)]
    one = start(["--local-devices", "8"], tmp / "one")
    outs = [finish(p) for p in joined]
    single = finish(one)
    return tmp, outs, single


def test_two_processes_train_like_one_with_as_many_devices(fits):
    tmp, outs, single = fits
    two = json.loads((tmp / "p0" / "history.json").read_text())
    one = json.loads((tmp / "one" / "history.json").read_text())
    assert set(two) == set(one)
    for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
        np.testing.assert_allclose(two[key], one[key], rtol=1e-5, err_msg=key)
    assert two["val_accuracy"][-1] > 0.8  # it learns, not merely agrees
    run = json.loads((tmp / "p0" / "run.json").read_text())
    assert run["devices"].startswith("cpu x 8")


def test_only_process_zero_speaks_and_writes(fits):
    tmp, outs, single = fits
    (out0, _), (out1, _) = outs
    def ours(out):  # gloo's own connection notes (C++ writes, sometimes split across lines) aside
        return [ln for ln in out.splitlines() if ln.strip() and "[Gloo]" not in ln and "peer ranks" not in ln]

    ours = [ours(out0), ours(out1)]
    assert json.loads(ours[0][-1])["reason"] == "completed" and any("epoch" in ln for ln in ours[0])
    assert ours[1] == []  # no progress, no result line
    assert not (tmp / "p1").exists()  # nothing written by process 1
    assert json.loads(single[0].strip().splitlines()[-1])["step"] == json.loads(ours[0][-1])["step"]


def test_incomplete_distributed_options_are_refused(tmp_path):
    proc = start(["--coordinator", "127.0.0.1:1234"], tmp_path / "x")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "Give all three of --coordinator HOST:PORT, --num-processes N" in err


def _joined(extra, logdir, devices_each=2):
    port = free_port()
    procs = [start(["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i),
                    "--local-devices", str(devices_each), *extra], logdir / f"p{i}") for i in range(2)]
    return [finish(p) for p in procs]


def test_two_processes_checkpoint_together_and_resume_on_another_layout(tmp_path):
    """Each process writes its part through Orbax, process 0 manages the folder; the checkpoint continues in two
    processes and in one, as the uninterrupted fit does."""
    ck = tmp_path / "ck"
    whole = _joined(["--checkpoint", str(tmp_path / "whole")], tmp_path / "whole_log")
    _joined(["--checkpoint", str(ck), "--epochs", "2"], tmp_path / "first")  # 2 of the 3 epochs
    assert sorted(p.name for p in ck.iterdir() if p.name.isdigit()) == ["18", "36"]  # 18 steps an epoch
    copy = shutil.copytree(ck, tmp_path / "ck_one")
    _joined(["--checkpoint", str(ck), "--resume"], tmp_path / "again")
    one = start(["--checkpoint", str(copy), "--resume", "--local-devices", "4"], tmp_path / "one")
    finish(one)
    ref = json.loads((tmp_path / "whole_log" / "p0" / "history.json").read_text())
    for where in (tmp_path / "again" / "p0", tmp_path / "one"):
        got = json.loads((where / "history.json").read_text())  # a fresh --logdir: the epoch the resume ran
        assert got["epoch"] == [3]
        for key in ("loss", "val_loss"):
            np.testing.assert_allclose(got[key], ref[key][-1:], rtol=1e-5, err_msg=f"{where.name}: {key}")
    assert whole
