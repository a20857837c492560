"""--logdir: the dependency-free TensorBoard writer (read back byte by byte here, and by TensorBoard itself), the
history as JSON and CSV (atomic rewrites), run.json, and the errors for a directory that cannot be one."""

import csv
import json
import math
import os
import socket
import struct
import time
import warnings

import numpy as np
import pytest

import jupyter_llm as jl
from jupyter_llm import events as ev
from jupyter_llm.config import make_config
from jupyter_llm.errors import ConfigError
from jupyter_llm.sinks import tensorboard as tb
from jupyter_llm.sinks.logdir import LogdirSink

# ---------------------------------------------------------------- an independent reader (bitwise CRC, raw protobuf)


def crc32c_bitwise(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def masked(data: bytes) -> int:
    c = crc32c_bitwise(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_records(path) -> list[bytes]:
    """TFRecord frames, each CRC checked; the file must end exactly after the last one."""
    data = open(path, "rb").read()
    pos, out = 0, []
    while pos < len(data):
        header = data[pos:pos + 8]
        (n,) = struct.unpack("<Q", header)
        assert struct.unpack("<I", data[pos + 8:pos + 12])[0] == masked(header), "length CRC"
        body = data[pos + 12:pos + 12 + n]
        assert len(body) == n, "truncated record"
        assert struct.unpack("<I", data[pos + 12 + n:pos + 16 + n])[0] == masked(body), "data CRC"
        out.append(body)
        pos += 16 + n
    assert pos == len(data)
    return out


def fields(buf: bytes):
    """(field number, wire type, value) of a protobuf message."""
    pos = 0

    def varint():
        nonlocal pos
        shift = result = 0
        while True:
            b = buf[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return result

    while pos < len(buf):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            value = varint()
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            n = varint()
            value, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise AssertionError(f"unexpected wire type {wire}")
        yield number, wire, value
    assert pos == len(buf)


def decode_event(buf: bytes) -> dict:
    event = {"wall_time": None, "step": 0, "file_version": None, "values": []}
    for number, wire, value in fields(buf):
        if (number, wire) == (1, 1):
            event["wall_time"] = struct.unpack("<d", value)[0]
        elif (number, wire) == (2, 0):
            event["step"] = value - (1 << 64) if value >= 1 << 63 else value
        elif (number, wire) == (3, 2):
            event["file_version"] = value.decode()
        elif (number, wire) == (5, 2):
            for n2, w2, v2 in fields(value):
                assert (n2, w2) == (1, 2), "Summary has only repeated Value"
                parts = {(n3, w3): v3 for n3, w3, v3 in fields(v2)}
                assert set(parts) == {(1, 2), (2, 5)}, "Value{tag, simple_value}"
                event["values"].append((parts[1, 2].decode(), struct.unpack("<f", parts[2, 5])[0]))
        else:
            raise AssertionError(f"unexpected Event field {number} (wire type {wire})")
    return event


def read_events(logdir) -> list[dict]:
    files = sorted(f for f in os.listdir(logdir) if f.startswith("events.out.tfevents."))
    assert files, f"no event file in {os.listdir(logdir)}"
    return [decode_event(r) for f in files for r in read_records(os.path.join(logdir, f))]


def scalars(events) -> dict:
    """{tag: [(step, value), ...]}"""
    out = {}
    for e in events:
        for tag, value in e["values"]:
            out.setdefault(tag, []).append((e["step"], value))
    return out


def f32(x: float) -> float:
    return float(np.float32(x))


# ---------------------------------------------------------------- the writer


def test_crc32c_known_vectors():
    assert tb.crc32c(b"123456789") == 0xE3069283
    assert tb.crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4
    assert tb.crc32c(b"\xff" * 32) == 0x62A8AB43
    assert tb.crc32c(bytes(range(32))) == 0x46DD794E
    blob = np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes()
    assert tb.crc32c(blob) == crc32c_bitwise(blob)
    assert tb.crc32c(blob[100:], tb.crc32c(blob[:100])) == crc32c_bitwise(blob)


def test_event_file_reads_back(tmp_path):
    t0 = time.time()
    with tb.EventWriter(tmp_path) as w:
        name = os.path.basename(w.path)
        for step in range(3):
            w.scalar("train/loss", 1.0 / (step + 1), step)
        w.scalars({"a": 2, "b/c": -0.5, "huge": 1e300, "nan": float("nan")}, 10, wall_time=123.5)
        w.scalar("neg", 7, -3)
    stamp, host = name[len("events.out.tfevents."):].split(".", 1)
    assert len(stamp) == 10 and int(t0) <= int(stamp) <= time.time() and host == socket.gethostname()
    events = read_events(tmp_path)
    assert events[0]["file_version"] == "brain.Event:2" and not events[0]["values"]
    assert all(t0 - 1 <= e["wall_time"] <= time.time() + 1 for e in events if e["wall_time"] != 123.5)
    got = scalars(events)
    assert got["train/loss"] == [(0, 1.0), (1, 0.5), (2, f32(1 / 3))]
    assert got["a"] == [(10, 2.0)] and got["b/c"] == [(10, -0.5)] and got["huge"] == [(10, math.inf)]
    assert math.isnan(got["nan"][0][1]) and got["neg"] == [(-3, 7.0)]
    assert [e["wall_time"] for e in events if ("a", 2.0) in e["values"]] == [123.5]  # one event, four values
    with pytest.raises(ValueError, match="closed"):
        w.scalar("late", 1, 1)


def test_background_flush_makes_data_visible_without_close(tmp_path):
    w = tb.EventWriter(tmp_path, flush_secs=0.05)
    try:
        size = os.path.getsize(w.path)
        assert size > 0  # the file_version event is on disk at once
        w.scalar("x", 1.5, 4)
        deadline = time.time() + 5
        while os.path.getsize(w.path) == size and time.time() < deadline:
            time.sleep(0.02)
        assert scalars(read_events(tmp_path)) == {"x": [(4, 1.5)]}
    finally:
        w.close()
    assert not w._thread.is_alive()


def test_two_writers_never_share_a_file(tmp_path):
    with tb.EventWriter(tmp_path) as a, tb.EventWriter(tmp_path) as b:
        a.scalar("a", 1, 1)
        b.scalar("b", 2, 1)
    assert a.path != b.path
    assert scalars(read_events(tmp_path)) == {"a": [(1, 1.0)], "b": [(1, 2.0)]}


def test_tensorboard_reads_the_file(tmp_path):
    accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator",
        reason="the tensorboard package is not installed (pip install tensorboard) — cross-check skipped")
    with tb.EventWriter(tmp_path) as w:
        for step in range(5):
            w.scalars({"train/loss": 1.0 / (step + 1), "val/accuracy": step / 10}, step * 10)
    acc = accumulator.EventAccumulator(str(tmp_path))
    acc.Reload()
    assert set(acc.Tags()["scalars"]) == {"train/loss", "val/accuracy"}
    assert [(s.step, s.value) for s in acc.Scalars("train/loss")] == [(i * 10, f32(1 / (i + 1))) for i in range(5)]
    assert [s.value for s in acc.Scalars("val/accuracy")] == [f32(i / 10) for i in range(5)]
    # TensorBoard checks the CRCs too: a flipped bit drops the record
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event

    raw = list(RawEventFileLoader(w.path).Load())
    assert len(raw) == 6 and Event.FromString(raw[0]).file_version == "brain.Event:2"
    assert [(v.tag, v.simple_value) for v in Event.FromString(raw[1]).summary.value] == [
        ("train/loss", 1.0), ("val/accuracy", 0.0)]
    bad = tmp_path / "bad" / "events.out.tfevents.0.bad"
    bad.parent.mkdir()
    data = bytearray(open(w.path, "rb").read())
    data[-1] ^= 1
    bad.write_bytes(bytes(data))
    assert len(list(RawEventFileLoader(str(bad)).Load())) == 5


# ---------------------------------------------------------------- the sink, driven by events


def _start(config):
    return ev.FitStart(config=config, model_name="MLP", param_count=90, devices="cpu x 1", batch_size=16,
                       steps_total=4, steps_per_epoch=2, epochs=2, split_sizes={"train": 32, "validation": 8})


def test_sink_maps_events_to_tags_and_files(tmp_path):
    sink = LogdirSink(tmp_path, history_every=0)
    sink.on(_start(make_config(epochs=2, logdir=str(tmp_path))))
    sink.on(ev.CompileStart())
    sink.on(ev.CompileEnd(seconds=1.0))
    sink.on(ev.Progress(step=1, steps_total=4, epoch=1, elapsed=0.1, units_per_s=160.0, eta=0.3, lr=1e-3,
                        metrics={"loss": 0.9, "accuracy": 0.5, "grad_norm": 2.0, "update_ratio": 0.01}))
    sink.on(ev.Eval(step=2, epoch=1, split="validation", metrics={"loss": 0.8, "accuracy": 0.6}))
    sink.on(ev.EpochEnd(epoch=1, step=2, elapsed=0.2, logs={"loss": 0.85, "val_loss": 0.8}))
    with open(tmp_path / "history.json") as f:  # written at the epoch end already
        assert json.load(f) == {"epoch": [1], "step": [2], "elapsed": [0.2], "loss": [0.85], "val_loss": [0.8]}
    assert json.load(open(tmp_path / "run.json"))["reason"] is None
    sink.on(ev.Progress(step=3, steps_total=4, epoch=2, elapsed=0.3, units_per_s=200.0, eta=0.1, lr=None,
                        metrics={"loss": 0.7}))
    sink.on(ev.EpochEnd(epoch=2, step=4, elapsed=0.4, logs={"loss": float("nan"), "val_loss": 0.7, "extra": 3}))
    sink.on(ev.Eval(step=4, epoch=2, split="test", metrics={"accuracy": 0.75}))
    sink.on(ev.FitEnd(reason="completed", step=4, epoch=2, elapsed=0.4, compile_seconds=1.0,
                      test_metrics={"accuracy": 0.75}, message="done"))
    sink.on(ev.Progress(step=5, steps_total=4, epoch=2, elapsed=0.5, units_per_s=1.0, eta=0, metrics={"loss": 1}))

    got = scalars(read_events(tmp_path))
    assert got["train/loss"] == [(1, f32(0.9)), (3, f32(0.7))]  # nothing after the end
    assert got["train/accuracy"] == [(1, 0.5)] and got["train/grad_norm"] == [(1, 2.0)]
    assert got["train/update_ratio"] == [(1, f32(0.01))] and got["train/lr"] == [(1, f32(1e-3))]
    assert got["train/throughput"] == [(1, 160.0), (3, 200.0)]
    assert got["val/loss"] == [(2, f32(0.8))] and got["val/accuracy"] == [(2, f32(0.6))]
    assert got["test/accuracy"] == [(4, 0.75)]
    assert got["epoch/loss"][0] == (1, f32(0.85)) and math.isnan(got["epoch/loss"][1][1])
    assert got["epoch/val_loss"] == [(1, f32(0.8)), (2, f32(0.7))] and got["epoch/extra"] == [(2, 3.0)]

    history = json.load(open(tmp_path / "history.json"))
    assert history == {"epoch": [1, 2], "step": [2, 4], "elapsed": [0.2, 0.4], "loss": [0.85, None],
                       "val_loss": [0.8, 0.7], "extra": [None, 3]}  # strict JSON: NaN is null
    rows = list(csv.reader(open(tmp_path / "history.csv")))
    assert rows == [["epoch", "step", "elapsed", "loss", "val_loss", "extra"],
                    ["1", "2", "0.2", "0.85", "0.8", ""], ["2", "4", "0.4", "nan", "0.7", "3"]]
    run = json.load(open(tmp_path / "run.json"))
    assert run["reason"] == "completed" and run["message"] == "done" and run["test_metrics"] == {"accuracy": 0.75}
    assert run["config"]["logdir"] == str(tmp_path) and run["config"]["epochs"] == 2
    assert run["model"] == "MLP" and run["split_sizes"] == {"train": 32, "validation": 8}
    assert sink.writer.closed
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_a_text_corpus_logs_evaluation_intervals_against_the_step(tmp_path):
    import dataclasses

    sink = LogdirSink(tmp_path, history_every=0)
    sink.on(dataclasses.replace(_start(make_config(steps=4, eval_every=2)), steps_per_pass=100.0, unit="tokens"))
    sink.on(ev.EpochEnd(epoch=1, step=2, elapsed=0.2, logs={"loss": 0.85, "val_loss": 0.8}))
    sink.on(ev.EpochEnd(epoch=2, step=4, elapsed=0.4, logs={"loss": 0.75, "val_loss": 0.7}))
    sink.on(ev.FitEnd(reason="completed", step=4, epoch=2, elapsed=0.4, compile_seconds=1.0))
    got = scalars(read_events(tmp_path))
    assert got["interval/loss"] == [(2, f32(0.85)), (4, f32(0.75))] and not any(k.startswith("epoch/") for k in got)
    run = json.load(open(tmp_path / "run.json"))
    assert run["steps_per_pass"] == 100.0 and run["epochs_are"] == ("evaluation intervals of 2 steps (a text corpus, "
                                                                    "sampled in windows)")


def test_resumed_fit_keeps_earlier_epochs(tmp_path):
    first = LogdirSink(tmp_path)
    first.on(_start(make_config(epochs=3)))
    for e in (1, 2, 3):
        first.on(ev.EpochEnd(epoch=e, step=2 * e, elapsed=e, logs={"loss": 1.0 / e}))
    first.on(ev.FitEnd(reason="interrupted", step=6, epoch=3, elapsed=3, compile_seconds=0))
    second = LogdirSink(tmp_path)
    second.on(_start(make_config(epochs=4, resume=str(tmp_path))))
    second.on(ev.EpochEnd(epoch=3, step=6, elapsed=3.5, logs={"loss": 0.3}))  # epoch 3 redone, replaces the old
    second.on(ev.EpochEnd(epoch=4, step=8, elapsed=4.5, logs={"loss": 0.2}))
    second.on(ev.FitEnd(reason="completed", step=8, epoch=4, elapsed=4.5, compile_seconds=0))
    assert json.load(open(tmp_path / "history.json")) == {
        "epoch": [1, 2, 3, 4], "step": [2, 4, 6, 8], "elapsed": [1, 2, 3.5, 4.5], "loss": [1.0, 0.5, 0.3, 0.2]}
    assert len([f for f in os.listdir(tmp_path) if f.startswith("events.out.tfevents.")]) == 2


def test_history_files_are_replaced_atomically(tmp_path, monkeypatch):
    sink = LogdirSink(tmp_path, history_every=0)
    sink.on(_start(make_config()))
    real_replace, real_fsync = os.replace, os.fsync
    synced, replaced = [], []

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))  # the path of the file being synced (Linux)
        real_fsync(fd)

    def replace(src, dst):
        src, dst = os.fspath(src), os.fspath(dst)
        assert os.path.dirname(src) == os.path.dirname(dst) == str(tmp_path)  # same directory: a rename
        assert src.endswith(".tmp") and not os.path.basename(src).startswith(os.path.basename(dst))
        assert synced[-1] == src  # flushed and fsynced before the rename
        if dst.endswith(".json"):
            json.load(open(src))  # the new content is complete before it takes the name
            if os.path.exists(dst):
                json.load(open(dst))  # and a reader of the old name still sees a whole file
        replaced.append(os.path.basename(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    for e in (1, 2):
        sink.on(ev.EpochEnd(epoch=e, step=e, elapsed=e, logs={"loss": 1.0 / e}))
    sink.on(ev.FitEnd(reason="completed", step=2, epoch=2, elapsed=2, compile_seconds=0))
    assert replaced.count("history.json") == 3 and replaced.count("history.csv") == 3 and "run.json" in replaced
    assert sorted(os.listdir(tmp_path)) == sorted(["history.csv", "history.json", "run.json",
                                                   os.path.basename(sink.writer.path)])  # no temporary file left


def test_a_failing_write_warns_once_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    sink = LogdirSink(tmp_path, history_every=0)
    sink.on(_start(make_config()))

    def broken(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sink.on(ev.EpochEnd(epoch=1, step=1, elapsed=1, logs={"loss": 1.0}))  # never raises into the loop
        sink.on(ev.FitEnd(reason="completed", step=1, epoch=1, elapsed=1, compile_seconds=0))
    assert [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] == [
        f"--logdir {tmp_path}: a write failed ([Errno 28] No space left on device); the training goes on without it."]
    assert sorted(os.listdir(tmp_path)) == sorted(["run.json", os.path.basename(sink.writer.path)])
    assert json.load(open(tmp_path / "run.json"))["reason"] is None  # the start card, intact


def test_logdir_that_is_a_file_is_a_config_error(tmp_path):
    afile = tmp_path / "notes.txt"
    afile.write_text("x")
    with pytest.raises(ConfigError, match=f"--logdir {afile} is a file, not a directory"):
        LogdirSink(afile)
    with pytest.raises(ConfigError, match=f"--logdir {afile}/runs cannot be created \\({afile} is a file\\)"):
        LogdirSink(afile / "runs")
    assert afile.read_text() == "x"


# ---------------------------------------------------------------- a real fit


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(0)
    return rng.normal(size=(64, 8)).astype(np.float32), rng.integers(0, 2, 64)


def _model():
    from flax import nnx

    return jl.models.MLP(in_features=8, hidden=[8], num_classes=2, rngs=nnx.Rngs(0))


def test_fit_writes_scalars_history_and_run_card(tmp_path, tiny):
    run = jl.fit(_model(), tiny, epochs=3, val_split=0.25, logdir=str(tmp_path), display="none")
    names = sorted(os.listdir(tmp_path))
    assert len([n for n in names if n.startswith("events.out.tfevents.")]) == 1
    assert {"history.json", "history.csv", "run.json"} <= set(names) and not [n for n in names if ".tmp" in n]

    history = json.load(open(tmp_path / "history.json"))
    assert history["epoch"] == [1, 2, 3] and history["step"] == [2, 4, 6]  # 48 train examples, batch 32
    assert history["elapsed"] == sorted(history["elapsed"])
    assert {k: history[k] for k in run.history} == run.history
    assert set(history) == {"epoch", "step", "elapsed", *run.history}
    rows = list(csv.DictReader(open(tmp_path / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    for key, values in run.history.items():
        assert [float(r[key]) for r in rows] == values  # full precision in the CSV

    card = json.load(open(tmp_path / "run.json"))
    assert card["reason"] == "completed" and card["message"] == "" and card["test_metrics"] is None
    assert card["config"] == json.loads(json.dumps(run.config.to_dict())) and card["step"] == 6
    assert card["split_sizes"] == {"train": 48, "validation": 16, "test": 0}

    got = scalars(read_events(tmp_path))
    assert {"train/loss", "train/accuracy", "train/lr", "train/grad_norm", "train/update_ratio",
            "train/throughput", "val/loss", "val/accuracy", "epoch/loss", "epoch/val_loss"} <= set(got)
    assert [s for s, _ in got["epoch/loss"]] == [1, 2, 3]
    assert [v for _, v in got["epoch/loss"]] == [f32(v) for v in run.history["loss"]]
    assert [v for _, v in got["val/loss"]] == [f32(v) for v in run.history["val_loss"]]
    assert [s for s, _ in got["val/loss"]] == [2, 4, 6]
    assert got["train/lr"][0][1] == f32(1e-3) and all(v > 0 for _, v in got["train/throughput"])
    steps = [s for s, _ in got["train/loss"]]
    assert steps == sorted(steps) and steps[-1] == 6


def test_fit_with_a_file_as_logdir_fails_before_training(tmp_path, tiny):
    afile = tmp_path / "log"
    afile.write_text("")
    with pytest.raises(ConfigError, match=str(afile)):
        jl.fit(_model(), tiny, epochs=1, logdir=str(afile), display="none")
    # nor does a refused --logdir leave the fit's new checkpoint folder behind
    with pytest.raises(ConfigError, match="cannot be created"):
        jl.fit(_model(), tiny, epochs=1, logdir=str(afile / "runs"), checkpoint=str(tmp_path / "ck"), display="none")
    assert not (tmp_path / "ck").exists()


def test_a_refused_resume_leaves_nothing_in_the_logdir(tmp_path):
    """Every refusal of --resume comes before the logdir is made: no empty TensorBoard file, no run card."""
    import jupyter_llm as jl
    from jupyter_llm.errors import JupyterLLMError
    from tests.helpers import mlp

    x = np.random.default_rng(0).random((64, 64), dtype=np.float32)
    data = (x, np.arange(64) % 10)
    run = jl.fit(mlp(), data, epochs=2, display="none", checkpoint=str(tmp_path / "ck"))
    (tmp_path / "theirs" / "3").mkdir(parents=True)
    refusals = {
        "another batch size": dict(resume=True, checkpoint=str(tmp_path / "ck"), batch_size=16),
        "past the end": dict(resume=str(tmp_path / "ck"), epochs=1),
        "no such directory": dict(resume=str(tmp_path / "nope")),
        "the user's folder": dict(resume=str(tmp_path / "theirs")),
        "a Run of another batch size": dict(resume=run, batch_size=16),
        "checkpoints of another fit": dict(checkpoint=str(tmp_path / "ck")),
    }
    for i, (name, options) in enumerate(refusals.items()):
        logdir = tmp_path / f"logs-{i}"
        with pytest.raises(JupyterLLMError):
            jl.fit(mlp(), data, **{"epochs": 2, "display": "none", "logdir": str(logdir), **options})
        assert not logdir.exists(), (name, os.listdir(logdir))
