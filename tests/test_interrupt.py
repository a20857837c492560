"""SIGINT handling: the stop flag, and interrupts held while Orbax starts its threads (then delivered)."""

import signal

import numpy as np
import pytest

from jupyter_llm.train.checkpoint import Checkpointer
from jupyter_llm.train.interrupt import interrupts_held, stop_on_interrupt


@pytest.fixture
def python_default_handler():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_first_interrupt_sets_the_flag_second_raises(python_default_handler):
    with stop_on_interrupt() as stop:
        signal.raise_signal(signal.SIGINT)
        assert stop()
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_held_interrupt_arrives_when_the_block_ends(python_default_handler):
    done = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts_held():
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)  # two while held are one, like two before a handler runs
            done.append("rest of the block")
    assert done == ["rest of the block"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_held_interrupt_goes_to_the_fits_handler(python_default_handler):
    with stop_on_interrupt() as stop:
        with interrupts_held():
            signal.raise_signal(signal.SIGINT)
            assert not stop()
        assert stop()  # the first one: a stop request, nothing raised
        with pytest.raises(KeyboardInterrupt):
            with interrupts_held():
                signal.raise_signal(signal.SIGINT)
                assert stop()
        # the second one raised only after the block


def test_nothing_held_no_signal_sent(python_default_handler):
    with interrupts_held():
        pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_interrupt_during_orbaxs_save_waits_for_the_save_to_start(tmp_path, python_default_handler):
    """The hang this prevents: a KeyboardInterrupt raised while Orbax's checkpointer's save was building its
    threads left one the interpreter waited for at exit. Here the interrupt arrives as the save call begins; the save
    still starts whole, the KeyboardInterrupt comes after it, and the step is committed and restorable."""
    state = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(3, np.float32)}
    with Checkpointer(tmp_path / "ck", keep=2) as ckpt:
        real_save, seen = ckpt._orbax.save, []

        def save_interrupted_at_its_start(*args, **kwargs):
            signal.raise_signal(signal.SIGINT)
            seen.append("save ran on")
            return real_save(*args, **kwargs)

        ckpt._orbax.save = save_interrupted_at_its_start
        with stop_on_interrupt() as stop:
            stop.requested = True  # the stop already asked for: this is the second interrupt
            with pytest.raises(KeyboardInterrupt):
                ckpt.save(1, state, {"epoch": 1})
        assert seen == ["save ran on"]
        ckpt.wait()
        restored, meta, step = ckpt.restore(like=state)
    assert step == 1 and meta == {"epoch": 1}
    np.testing.assert_array_equal(np.asarray(restored["w"]), state["w"])


def test_a_handler_set_outside_python_is_left_alone(python_default_handler, monkeypatch):
    """`getsignal` gives None for a handler installed outside Python, which `signal.signal` could not put back: then
    nothing is held or replaced, by the save or by the fit."""
    real_getsignal = signal.getsignal
    monkeypatch.setattr(signal, "getsignal", lambda signum: None)
    with interrupts_held():
        assert real_getsignal(signal.SIGINT) is signal.default_int_handler
    with stop_on_interrupt() as stop:  # nor is the fit's stop flag installed over it
        assert real_getsignal(signal.SIGINT) is signal.default_int_handler and not stop()
