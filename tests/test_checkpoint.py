"""Checkpointer: asynchronous atomic saves, restore of the newest intact step, clear errors, survival of kill -9."""

import functools
import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jupyter_llm.errors import JupyterLLMError
from jupyter_llm.models.mlp import MLP
from jupyter_llm.train.checkpoint import Checkpointer, CheckpointError, CheckpointWarning
from jupyter_llm.train.checkpoint_dir import MARKER
from jupyter_llm.train.state import TrainState, init_state, split_model

pytestmark = pytest.mark.filterwarnings("error::jupyter_llm.train.checkpoint.CheckpointWarning")


def make_state(hidden=32, step=0):
    """An MLP with dropout (so `rest` holds a typed PRNG key) + Adam, every float shifted by `step`."""
    return _build(hidden, jnp.int32(step))


@functools.partial(jax.jit, static_argnums=0)  # one compile per width instead of dozens of eager ones
def _build(hidden, step):
    model = MLP(64, [hidden], 10, dropout=0.1, rngs=nnx.Rngs(0))
    _, params, rest = split_model(model, train=True)
    state = init_state(params, rest, optax.adam(1e-3))

    def shift(a):
        return a + step if jnp.issubdtype(a.dtype, jnp.floating) else a

    rest = jax.tree.map(lambda k: jax.random.fold_in(k, step) if _is_key(k) else k + step.astype(k.dtype), state.rest)
    return state._replace(params=jax.tree.map(shift, state.params), rest=rest,
                          opt_state=jax.tree.map(shift, state.opt_state), step=step)


def _is_key(a):
    return jnp.issubdtype(a.dtype, jax.dtypes.prng_key)


def assert_bitwise_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype and x.shape == y.shape
        if _is_key(x):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        assert np.asarray(x).tobytes() == np.asarray(y).tobytes()


def _listed(directory):
    """The directory's entries besides the library's marker file."""
    return sorted(n for n in os.listdir(directory) if n != MARKER)


def _data_files(step_dir):
    files = [f for f in glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True) if os.path.isfile(f)]
    assert files, f"no array data files under {step_dir}"
    return files


def test_round_trip_keeps_newest_and_is_bitwise(tmp_path):
    states = {s: make_state(step=s) for s in (1, 2, 3)}
    meta = {"config": {"lr": 1e-3, "hidden": [32]}, "epoch": 2, "sums": {"loss": 1.25, "n": 7}, "tok": None}
    with Checkpointer(tmp_path / "ck", keep=2) as ckpt:
        for s, state in states.items():
            ckpt.save(s, state, dict(meta, step=s))
        ckpt.wait()
        assert ckpt.steps() == [2, 3] and ckpt.latest_step() == 3
        assert _listed(tmp_path / "ck") == ["2", "3"]
    # a new Checkpointer (as a new process would) restores into shape-only structs with shardings
    mesh = jax.make_mesh((1,), ("data",))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    like = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated),
                        jax.eval_shape(lambda: make_state()))
    with Checkpointer(str(tmp_path / "ck")) as ckpt:
        state, got_meta, step = ckpt.restore(like)
        assert step == 3 and got_meta == dict(meta, step=3)
        assert_bitwise_equal(state, states[3])
        key = state.rest["dropout"]["rngs"]["key"][...]
        assert _is_key(key) and key.sharding == replicated
        older, _, step = ckpt.restore(make_state(), step=2)  # concrete arrays work as `like` too
        assert step == 2
        assert_bitwise_equal(older, states[2])


def test_meta_is_frozen_at_save_and_must_be_json(tmp_path):
    with Checkpointer(tmp_path, keep=1) as ckpt:
        meta = {"sums": [np.float32(0.5), jnp.int32(3)], "nested": {"a": 1}}
        ckpt.save(5, make_state(), meta)
        meta["nested"]["a"] = 99  # the loop reuses its dicts while the save is still writing
        with pytest.raises(CheckpointError, match="JSON"):
            ckpt.save(6, make_state(), {"bad": object()})
        _, got, _ = ckpt.restore(make_state())
    assert got == {"sums": [0.5, 3], "nested": {"a": 1}}


def test_save_is_asynchronous(tmp_path):
    big = TrainState(params={"w": jax.random.normal(jax.random.key(0), (4096, 4096))}, rest={}, opt_state=(),
                     step=jnp.int32(1), bad_step=jnp.int32(-1), skipped=jnp.int32(0))
    expected = np.asarray(big.params["w"]).copy()
    bump = jax.jit(lambda s: jax.tree.map(lambda a: a + 1, s), donate_argnums=0)
    with Checkpointer(tmp_path, asynchronous=True) as ckpt:
        started = time.perf_counter()
        ckpt.save(1, big, {})
        returned = time.perf_counter() - started
        in_flight = _listed(tmp_path)
        assert ckpt.steps() == []
        big = bump(big)  # the loop donates the state to its next step while the save is still writing
        ckpt.wait()
        committed = time.perf_counter() - started
        assert in_flight == ["1.orbax-checkpoint-tmp"], (in_flight, returned, committed)
        assert _listed(tmp_path) == ["1"] and ckpt.steps() == [1]
        restored, _, _ = ckpt.restore(big)
        assert np.array_equal(np.asarray(restored.params["w"]), expected)
    with Checkpointer(tmp_path / "sync", asynchronous=False) as ckpt:
        ckpt.save(1, big, {})
        assert _listed(tmp_path / "sync") == ["1"]


def _truncate(step_dir):
    path = max(_data_files(step_dir), key=os.path.getsize)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _delete_data(step_dir):
    for path in _data_files(step_dir):
        os.remove(path)


def _delete_all_files(step_dir):
    for path in glob.glob(os.path.join(step_dir, "**"), recursive=True):
        if os.path.isfile(path):
            os.remove(path)


def _garble(name):
    def damage(step_dir):
        with open(os.path.join(step_dir, name), "w") as f:
            f.write('{"trunc')
    return damage


DAMAGES = {
    "truncated array file": _truncate,
    "deleted array files": _delete_data,
    "deleted every file": _delete_all_files,
    "no commit marker": lambda d: os.remove(os.path.join(d, "commit_success.txt")),
    "garbled step metadata": _garble("_CHECKPOINT_METADATA"),
    "garbled info json": _garble(os.path.join("info", "metadata")),
}


@pytest.mark.parametrize("damage", DAMAGES, ids=list(DAMAGES))
def test_damaged_newest_falls_back_to_previous(tmp_path, damage):
    with Checkpointer(tmp_path) as ckpt:
        for s in (1, 2):
            ckpt.save(s, make_state(step=s), {"step": s})
    DAMAGES[damage](str(tmp_path / "2"))
    with Checkpointer(tmp_path) as ckpt:
        with pytest.warns(CheckpointWarning, match="damaged checkpoint step 2 .*; restored step 1") as caught:
            state, meta, step = ckpt.restore(make_state())
        assert len(caught) == 1
        assert (step, meta) == (1, {"step": 1})
        assert_bitwise_equal(state, make_state(step=1))
        with pytest.raises(CheckpointError, match="step 2 .* is damaged"):
            ckpt.restore(make_state(), step=2)
        if damage == "truncated array file":  # the fit continues from step 1: its new step 2 replaces the bad one
            with pytest.warns(CheckpointWarning, match="Replacing .*checkpoint step"):
                ckpt.save(2, make_state(step=7), {"step": 2})
            state, meta, step = ckpt.restore(make_state())
            assert step == 2 and float(state.params["out"]["bias"][...][0]) == 7
        elif damage not in ("deleted array files",):
            assert ckpt.steps() == [1]  # the file checks of steps() already see this damage


def test_several_damaged_steps_give_one_warning(tmp_path):
    with Checkpointer(tmp_path) as ckpt:
        for s in (1, 2, 3):
            ckpt.save(s, make_state(step=s), {"step": s})
    _truncate(str(tmp_path / "3"))
    os.remove(tmp_path / "2" / "commit_success.txt")
    with Checkpointer(tmp_path) as ckpt:
        with pytest.warns(CheckpointWarning) as caught:
            state, meta, step = ckpt.restore(make_state())
    assert step == 1 and len(caught) == 1
    text = str(caught[0].message)
    assert "damaged checkpoint steps 3, 2 in" in text and "step 2: commit_success.txt is missing" in text
    assert text.endswith("restored step 1.")


def test_no_intact_checkpoint_is_a_clear_error(tmp_path):
    with Checkpointer(tmp_path) as ckpt:
        with pytest.raises(CheckpointError, match=f"No checkpoint in {tmp_path}"):
            ckpt.restore(make_state())
        for s in (1, 2):
            ckpt.save(s, make_state(step=s), {})
        ckpt.wait()
        _truncate(str(tmp_path / "2"))
        os.remove(tmp_path / "1" / "commit_success.txt")
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no step is usable: the one error says it all, no warnings before it
            with pytest.raises(CheckpointError) as err:
                ckpt.restore(make_state())
        message = str(err.value)
        assert str(tmp_path) in message and "step 2: its arrays cannot be read: ValueError: OUT_OF_RANGE" in message
        assert "step 1: commit_success.txt is missing" in message and "\n" not in message
        assert message.endswith("Start the fit without --resume, or resume from another directory.")
        with pytest.raises(CheckpointError, match="no checkpoint for step 9"):
            ckpt.restore(make_state(), step=9)
    assert issubclass(CheckpointError, JupyterLLMError)


def test_wrong_model_names_the_parameter_and_both_shapes(tmp_path):
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, make_state(hidden=32), {})
        with pytest.raises(CheckpointError) as err:
            ckpt.restore(make_state(hidden=16))
    message = str(err.value)
    assert "\n" not in message and str(tmp_path) in message
    assert "params/hidden/0/bias: the checkpoint has shape (32,), the model (16,)" in message


def test_directory_that_is_a_file_or_under_a_file(tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("hello")
    with pytest.raises(CheckpointError, match="is an existing file"):
        Checkpointer(a_file)
    # Not writable: tests run as root, which ignores permission bits, so a path below a file stands in for it.
    with pytest.raises(CheckpointError, match=r"Cannot create checkpoint directory .*notes.txt is a file"):
        Checkpointer(a_file / "sub" / "ck")
    created = Checkpointer(tmp_path / "new" / "ck")  # relative or missing folders are made, absolute
    assert created.directory.is_absolute() and created.directory.is_dir()
    created.close()


CHILD = textwrap.dedent("""
    import sys
    import jax, jax.numpy as jnp, numpy as np
    from jupyter_llm.train.checkpoint import Checkpointer
    from jupyter_llm.train.state import TrainState
    directory, step = sys.argv[1], int(sys.argv[2])
    base = jnp.asarray(np.random.default_rng(0).standard_normal({n}, dtype=np.float32))
    with Checkpointer(directory, keep=2) as ckpt:
        while True:
            state = TrainState({{"w": base + step}}, {{"key": jax.random.key(step)}}, (), jnp.int32(step),
                               jnp.int32(-1), jnp.int32(0))
            ckpt.save(step, state, {{"step": step}})
            print(step, flush=True)
            step += 1
""")
N = 12_500_000  # 50 MB of float32 parameters


def test_kill_during_save_leaves_newest_intact_step(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(n=N))
    directory = tmp_path / "ck"
    base = np.random.default_rng(0).standard_normal(N, dtype=np.float32)
    like = TrainState({"w": jax.ShapeDtypeStruct((N,), jnp.float32)}, {"key": jax.eval_shape(jax.random.key, 0)},
                      (), *(jax.ShapeDtypeStruct((), d) for d in (jnp.int32, jnp.int32, jnp.int32)))
    rng, start = random.Random(0), 1
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    for trial in range(2):  # 0: kill while a save is in flight; 1: kill at a random moment, after a resume
        log = tmp_path / f"child{trial}.log"
        with open(log, "wb") as err:
            child = subprocess.Popen([sys.executable, str(script), str(directory), str(start)], env=env,
                                     stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline, committed_at_start = time.time() + 60, _committed(directory)
            while time.time() < deadline and not _committed(directory) - committed_at_start:
                assert child.poll() is None, log.read_text()[-2000:]
                time.sleep(0.01)
            assert _committed(directory) - committed_at_start, "the child saved nothing for 60 s"
            if trial == 0:  # the next save is already running when the previous one committed: wait to see it
                while time.time() < deadline and not any(n.endswith("-tmp") for n in os.listdir(directory)):
                    assert child.poll() is None, log.read_text()[-2000:]
                    time.sleep(0.002)
            else:
                time.sleep(rng.uniform(0, 0.5))
            os.kill(child.pid, signal.SIGKILL)
            child.wait(10)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        newest = max(_committed(directory))
        ckpt = Checkpointer(directory, keep=2)
        state, meta, step = ckpt.restore(like)
        ckpt.close()
        assert step == newest and meta == {"step": step}
        assert int(state.step) == step
        np.testing.assert_array_equal(np.asarray(state.params["w"]), base + step)
        assert np.array_equal(jax.random.key_data(state.rest["key"]), jax.random.key_data(jax.random.key(step)))
        start = step + 1  # the next child continues where this one was killed
    with Checkpointer(directory, keep=2) as ckpt:  # a writer clears what the killed one left half-written
        ckpt.save(start, {"w": jnp.zeros(3)}, {})
    assert all(n.isdigit() for n in _listed(directory)), _listed(directory)


def _committed(directory):
    try:
        return {int(n) for n in os.listdir(directory) if n.isdigit()}
    except FileNotFoundError:
        return set()


# ---------------------------------------------------------------- a checkpoint directory deletes only what it wrote
def _files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_folder_of_the_users_is_refused_before_any_work_and_left_as_it_was(tmp_path):
    """Folders named with digits used to be taken for damaged steps and deleted by the --keep clean-up."""
    import jupyter_llm as jl

    theirs = tmp_path / "theirs"
    for rel in ("3/thesis.txt", "2024/r.csv", "notes.md"):
        (theirs / rel).parent.mkdir(parents=True, exist_ok=True)
        (theirs / rel).write_text(rel)
    before = _files(theirs)
    x = np.random.default_rng(0).random((64, 64), dtype=np.float32)
    with pytest.raises(CheckpointError, match=r"already holds files that jupyter_llm did not write \('2024', '3', "
                                              r"'notes.md'\)"):
        jl.fit(MLP(64, [8], 10, rngs=nnx.Rngs(0)), (x, np.arange(64) % 10), epochs=2, checkpoint=str(theirs),
               save_every=1, keep=2, display="none")
    assert _files(theirs) == before and sorted(os.listdir(theirs)) == ["2024", "3", "notes.md"]


def test_the_root_and_the_home_folder_are_refused(tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="cannot be used: it is the root of the filesystem"):
        Checkpointer("/")
    assert not [n for n in os.listdir("/") if n.startswith(".write-test-") or n == MARKER]
    home = tmp_path / "home"
    home.mkdir()  # even an empty home folder: checkpoints get a folder of their own
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(CheckpointError, match="it is your home folder"):
        Checkpointer("~")
    assert os.listdir(home) == []
    with Checkpointer("~/ck") as ckpt:  # a folder inside it is fine
        assert ckpt.directory == home / "ck"


def test_a_foreign_step_named_entry_in_a_used_directory_is_refused_by_name(tmp_path):
    with Checkpointer(tmp_path, keep=1) as ckpt:
        ckpt.save(1, make_state(step=1), {})
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "plot.png").write_bytes(b"png")
    (tmp_path / "12").write_text("a file named like a step")
    (tmp_path / "README.md").write_text("other files are left alone")
    with pytest.raises(CheckpointError, match=r"holds '12', '7', named like checkpoint steps but not written by "
                                              r"jupyter_llm. Move them out"):
        Checkpointer(tmp_path)
    assert (tmp_path / "7" / "plot.png").read_bytes() == b"png" and (tmp_path / "12").is_file()
    os.remove(tmp_path / "12")
    shutil.rmtree(tmp_path / "7")
    with Checkpointer(tmp_path, keep=1) as ckpt:  # a README beside the steps is not in the way
        ckpt.save(2, make_state(step=2), {})
    assert _listed(tmp_path) == ["2", "README.md"]


def test_links_named_like_steps_are_skipped_never_followed_or_deleted(tmp_path):
    """A link `291 -> 285` was restored as step 291, and the clean-up then deleted the real step 285."""
    ck, outside = tmp_path / "ck", tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    with Checkpointer(ck, keep=2) as ckpt:
        for s in (284, 285):
            ckpt.save(s, make_state(step=s), {"step": s})
    os.symlink(ck / "285", ck / "291")
    os.symlink(outside, ck / "999")
    with Checkpointer(ck, keep=2) as ckpt:
        with pytest.warns(CheckpointWarning, match="Skipping the links 291, 999 in .*never read or deleted through"):
            state, meta, step = ckpt.restore(make_state())
        assert step == 285 and meta == {"step": 285}
        assert_bitwise_equal(state, make_state(step=285))
        ckpt.save(286, make_state(step=286), {"step": 286})
        ckpt.wait()
        assert ckpt.steps() == [285, 286]  # 284 went by --keep; 285 is one of the two newest
        with pytest.raises(CheckpointError, match="291 is a link"):
            ckpt.save(291, make_state(step=291), {})
    assert os.readlink(ck / "291") == str(ck / "285") and (ck / "285").is_dir()
    assert _files(outside) == {"keep.txt": b"mine"}


def _info(step_dir):
    return json.loads((step_dir / "info" / "metadata").read_text())


def _set_info(step_dir, info):
    (step_dir / "info" / "metadata").write_text(json.dumps(info))


TAMPERED = {
    "a format from elsewhere": (lambda d: _set_info(d, {**_info(d), "format": 99}), "its format is 99"),
    "meta not an object": (lambda d: _set_info(d, {**_info(d), "meta": [1]}), "its meta is not a JSON object"),
    "a malformed array row": (lambda d: _set_info(d, {**_info(d), "leaves": [["w", [-1], "float32", None]]}),
                              "malformed row"),
    "step metadata holding a list": (lambda d: (d / "_CHECKPOINT_METADATA").write_text("[]"),
                                     "_CHECKPOINT_METADATA holds a list, not a JSON object"),
    "info nested 100,000 deep": (lambda d: (d / "info" / "metadata").write_text("[" * 100_000 + "]" * 100_000),
                                 "info/metadata is nested too deeply"),
}


@pytest.mark.parametrize("tamper", TAMPERED, ids=list(TAMPERED))
def test_a_tampered_step_is_damaged_skipped_with_a_warning_that_names_it(tmp_path, tamper):
    damage, reason = TAMPERED[tamper]
    with Checkpointer(tmp_path) as ckpt:
        for s in (1, 2):
            ckpt.save(s, make_state(step=s), {"step": s})
    damage(tmp_path / "2")
    with Checkpointer(tmp_path) as ckpt:
        with pytest.warns(CheckpointWarning, match=f"damaged checkpoint step 2 .*{reason}.*; restored step 1"):
            _, meta, step = ckpt.restore(make_state())
        assert (step, meta) == (1, {"step": 1}) and ckpt.steps() == [1]


def test_a_directory_of_an_earlier_version_is_adopted(tmp_path):
    """Checkpoints written before the marker file existed still resume, and the folder is marked then."""
    with Checkpointer(tmp_path, keep=3) as ckpt:
        ckpt.save(1, make_state(step=1), {"step": 1})
    os.remove(tmp_path / MARKER)
    with Checkpointer(tmp_path, keep=3) as ckpt:
        _, meta, step = ckpt.restore(make_state())
    assert step == 1 and (tmp_path / MARKER).is_file()
    os.remove(tmp_path / MARKER)
    shutil.rmtree(tmp_path / "1" / "info")  # no proof it was written here: not adopted
    with pytest.raises(CheckpointError, match=r"did not write \('1'\)"):
        Checkpointer(tmp_path)
