"""LoRA and --freeze (#21), offline: the tiny GPT-2 of tests/test_pretrained.py (written by transformers) and small
GPTs of ours. What is frozen stays bitwise as it was, the optimizer keeps moments for the trained leaves only, the
adapted model starts as the base model, and its merged export gives transformers our logits (float32, within
1e-4, the tolerance of test_pretrained.py)."""

import json

import jax
import numpy as np
import pytest
from flax import nnx

import jupyter_llm as jl
from jupyter_llm import cli
from jupyter_llm.errors import ConfigError
from jupyter_llm.models import lora
from jupyter_llm.train.state import Trainable, split_model
from tests.helpers import mlp
from tests.test_pretrained import LOGIT_ATOL, _hf_logits, _ids, _logits, hf_dir, text_path, tok_dir  # noqa: F401

SHAKESPEARE = "notebooks/data/tinyshakespeare.txt"


def _flat(model, kind=nnx.Param) -> dict:
    return {".".join(map(str, p)): np.array(v[...]) for p, v in nnx.to_flat_state(nnx.state(model, kind))}


def _leaves(tree) -> list:
    return [a for a in jax.tree.leaves(tree) if a.ndim > 0]


def _small_gpt(vocab, seed=0):
    return jl.models.GPT(vocab_size=vocab, block_size=32, n_layer=2, n_head=2, n_embd=32, rngs=nnx.Rngs(seed))


@pytest.fixture(scope="module")
def chars():
    from pathlib import Path

    return jl.datasets.text(Path(__file__).parent.parent.joinpath(SHAKESPEARE).read_text()[:40_000], block_size=32)


@pytest.fixture(scope="module")
def lora_run(hf_dir, tok_dir, text_path):  # noqa: F811
    model = jl.models.GPT.from_pretrained(hf_dir)
    base = _flat(model)
    data = jl.datasets.text(text_path, tokenizer=tok_dir, block_size=32)
    run = jl.fit(model, data, steps=40, eval_every=20, batch_size=8, lr=1e-2, lora=4, display="none")
    return run, base


def test_adapters_start_as_the_base_model(hf_dir):  # noqa: F811
    model = jl.models.GPT.from_pretrained(hf_dir)
    ids = _ids(vocab=model.config.vocab_size)
    before = _logits(model, ids)
    added = lora.add_adapters(model, rank=4, alpha=8.0)
    assert len(added) == 2 * 4  # attn (c_attn, c_proj) and mlp (c_fc, c_proj) of each of 2 blocks
    np.testing.assert_array_equal(_logits(model, ids), before)  # B = 0: bitwise the base model
    lora.remove_adapters(model)
    assert not lora.has_adapters(model) and set(_flat(model)) == set(_flat(jl.models.GPT.from_pretrained(hf_dir)))


def test_lora_trains_adapters_only_and_lowers_the_loss(lora_run):
    run, base = lora_run
    after = _flat(run.model)
    adapters = {k: v for k, v in after.items() if ".lora_" in k}
    assert set(after) - set(adapters) == set(base)
    assert all(np.array_equal(after[k], base[k]) for k in base)  # every base weight bitwise unchanged
    assert any(np.abs(v).max() > 0 for k, v in adapters.items() if k.endswith("lora_b"))  # the adapters moved
    assert run.history["loss"][-1] < run.history["loss"][0]
    assert run.history["val_loss"][-1] < run.history["val_loss"][0]
    # Adam's two moments for each adapter leaf, nothing for the base: shapes and element counts
    params = _leaves(run.state.params)
    moments = _leaves(run.state.opt_state)
    assert len(params) == len(adapters) == 16 and len(moments) == 2 * len(params)
    assert sorted(m.shape for m in moments) == sorted(2 * [p.shape for p in params])
    adapter_size = sum(v.size for v in adapters.values())
    assert sum(m.size for m in moments) == 2 * adapter_size
    assert adapter_size < sum(v.size for v in base.values()) / 5  # rank 4 of width 32: a tenth of the model


def test_save_pretrained_merges_the_adapters_for_transformers(lora_run, tmp_path):
    run, _ = lora_run
    folder = run.save_pretrained(tmp_path / "merged")
    assert {p.name for p in folder.iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json"}
    assert lora.has_adapters(run.model)  # the run's model keeps its adapters; the export is a merged copy
    ids = _ids(vocab=run.model.config.vocab_size, seed=1)
    ours = _logits(run.model, ids)
    np.testing.assert_allclose(_hf_logits(folder, ids), ours, atol=LOGIT_ATOL, rtol=0)
    np.testing.assert_allclose(_logits(jl.models.GPT.from_pretrained(folder), ids), ours, atol=LOGIT_ATOL, rtol=0)


def test_streamed_bpe_text_is_the_generated_text(lora_run):
    """Decoded as a whole: a character split across chunks never shows as U+FFFD; no prompt starts at <|endoftext|>."""
    run, _ = lora_run
    assert run._prompt_ids("").tolist() == [run.tokenizer.start_id] and run.tokenizer.start_id is not None
    whole = run.generate("é", 60, temperature=1.5, seed=3)
    pieces = list(run.generate_stream("é", 60, temperature=1.5, seed=3, chunk=1))
    assert "".join(pieces) == whole
    assert not any(p.endswith("\ufffd") for p in pieces[:-1])


def test_freeze_leaves_exactly_the_matched_parameters(chars):
    model = _small_gpt(chars.vocab_size)
    before = _flat(model)
    run = jl.fit(model, chars, steps=10, eval_every=10, batch_size=8, lr=1e-2, freeze="wte,h.0", display="none")
    frozen = {k for k in before if k.startswith(("wte.", "h.0."))}
    assert frozen and len(frozen) < len(before)
    after = _flat(model)
    for k in before:
        assert np.array_equal(after[k], before[k]) == (k in frozen), k
    trained = sum(before[k].size for k in before if k not in frozen)
    assert sum(m.size for m in _leaves(run.state.opt_state)) == 2 * trained


def test_freeze_patterns_are_paths_or_globs():
    model = _small_gpt(40)
    names = lambda t: {".".join(map(str, p)) for p, _ in nnx.to_flat_state(split_model(model, train=True,  # noqa
                                                                                         trainable=t)[1])}
    everything = names(Trainable())
    assert everything - names(Trainable(frozen=("h.*.ln_1",))) == {f"h.{i}.ln_1.{w}" for i in (0, 1)
                                                                   for w in ("scale", "bias")}
    assert all(n.startswith("h.1.") for n in everything - names(Trainable(frozen=("h.1",))))
    assert everything - names(Trainable(frozen=("wpe.embedding",))) == {"wpe.embedding"}


def test_resumed_lora_fit_equals_the_uninterrupted_one(chars, tmp_path):
    options = dict(eval_every=10, steps_per_dispatch=5, batch_size=8, lr=1e-2, lora=4, lora_dropout=0.1,
                   display="none")
    whole = _small_gpt(chars.vocab_size)
    jl.fit(whole, chars, steps=30, **options)
    ck = tmp_path / "ck"
    jl.fit(_small_gpt(chars.vocab_size), chars, steps=10, checkpoint=str(ck), **options)
    resumed = _small_gpt(chars.vocab_size)  # a fresh base model, as a new process would build it
    run = jl.fit(resumed, chars, steps=30, checkpoint=str(ck), resume=True, **options)
    assert run.step == 30
    a, b = _flat(whole), _flat(resumed)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("options, keyword, flag", [
    (dict(lora=0), "lora must be at least 1, got 0", "--lora must be at least 1, got 0"),
    (dict(lora=4, lora_targets="qkv"), "lora_targets='qkv': 'qkv' names no nnx.Linear layer of GPT",
     "--lora-targets 'qkv': 'qkv' names no nnx.Linear layer of GPT"),
    (dict(freeze="wte,h.9"), "freeze='h.9' matches no parameter of GPT", "--freeze 'h.9' matches no parameter"),
    (dict(freeze="*"), "freezes every parameter of GPT", "freezes every parameter of GPT"),
    (dict(lora=4, freeze="wte"), "freeze='wte' matches no adapter of GPT: with lora only the adapters train",
     "--freeze 'wte' matches no adapter of GPT: with --lora only the adapters train"),
    (dict(lora_alpha=16.0), "lora_alpha applies to LoRA adapters; add lora", "--lora-alpha applies to LoRA adapters; "
     "add --lora RANK"),
])
def test_a_bad_fine_tuning_option_is_one_clear_message(chars, options, keyword, flag, capsys):
    model = _small_gpt(chars.vocab_size)
    before = _flat(model)
    with pytest.raises(ConfigError) as info:
        jl.fit(model, chars, steps=2, display="none", **options)
    assert keyword in str(info.value) and "--" not in str(info.value)
    assert not lora.has_adapters(model) and _flat(model).keys() == before.keys()  # refused: the model as given
    argv = ["train", "--model", "gpt-char-tiny", "--data", SHAKESPEARE, "--steps", "2", "--block-size", "32"]
    for name, value in options.items():
        argv += ["--" + name.replace("_", "-"), str(value)]
    assert cli.main(argv) == 2
    assert flag in capsys.readouterr().err


def test_lora_on_a_model_without_those_layers_names_its_layers(capsys):
    with pytest.raises(ConfigError, match=r"lora_targets='attn,mlp': 'attn' names no nnx.Linear layer of MLP, whose "
                                          r"linear layers are .*\. Name the layers"):
        jl.fit(mlp(), "digits", epochs=1, lora=4, display="none")
    assert cli.main(["train", "--model", "mlp", "--data", "digits", "--epochs", "1", "--lora", "4"]) == 2
    assert "--lora-targets 'attn,mlp': 'attn' names no nnx.Linear layer of MLP" in capsys.readouterr().err
    run = jl.fit(mlp(), "digits", epochs=1, lora=4, lora_targets="hidden,out", display="none")  # named: adapted
    assert lora.has_adapters(run.model)


def test_command_line_fine_tunes_a_hugging_face_folder(hf_dir, text_path, capsys):  # noqa: F811
    argv = ["train", "--model", str(hf_dir), "--data", str(text_path), "--steps", "4", "--eval-every", "4",
            "--batch-size", "4", "--block-size", "32", "--lora", "2", "--lora-targets", "c_attn"]
    assert cli.main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["reason"] == "completed" and result["step"] == 4


def test_lr_find_with_lora_leaves_the_model_as_it_was(chars):
    model = _small_gpt(chars.vocab_size)
    before = _flat(model)
    result = jl.lr_find(model, chars, steps=6, batch_size=8, lora=4)
    assert len(result.losses) == 6 and not lora.has_adapters(model)
    after = _flat(model)
    assert after.keys() == before.keys() and all(np.array_equal(after[k], before[k]) for k in before)


def test_bf16_casts_the_frozen_base_too(chars):
    """Under --precision bf16 every matmul of a LoRA fit runs in bfloat16, the frozen base's included, and the base
    stays float32 and bitwise unchanged in the model."""
    from jupyter_llm.config import FitConfig
    from jupyter_llm.fitting.prepare import PreparedFit

    base = _flat(_small_gpt(chars.vocab_size))
    config = FitConfig(steps=4, batch_size=4, lora=4, precision="bf16", display="none")
    prepared = PreparedFit(_small_gpt(chars.vocab_size), chars, config)
    x = jax.numpy.zeros((2, 8), jax.numpy.int32)
    jaxpr = jax.make_jaxpr(prepared.step._train_forward)(prepared.step._lowered(prepared.params), prepared.rest, x)
    dots = [e for e in _equations(jaxpr.jaxpr) if e.primitive.name == "dot_general"]
    assert dots and all(v.aval.dtype == jax.numpy.bfloat16 for e in dots for v in e.invars), \
        sorted({str(v.aval.dtype) for e in dots for v in e.invars})
    runs = {p: jl.fit(_small_gpt(chars.vocab_size), chars, steps=30, eval_every=10, batch_size=8, lr=1e-2, lora=4,
                      precision=p, display="none") for p in ("fp32", "bf16")}
    # the same function to bfloat16's precision (8 bits of mantissa): losses within 1 %
    np.testing.assert_allclose(runs["bf16"].history["loss"], runs["fp32"].history["loss"], rtol=1e-2)
    np.testing.assert_allclose(runs["bf16"].history["val_loss"], runs["fp32"].history["val_loss"], rtol=1e-2)
    after = _flat(runs["bf16"].model)
    assert all(after[k].dtype == np.float32 and np.array_equal(after[k], base[k]) for k in base)


def _equations(jaxpr):
    """Every equation of a jaxpr, those inside its sub-jaxprs (pjit, custom_vjp, ...) included."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in (value if isinstance(value, (list, tuple)) else [value]):
                inner = getattr(sub, "jaxpr", None)
                if inner is not None:
                    yield from _equations(getattr(inner, "jaxpr", inner))


def test_a_lora_fit_puts_as_many_steps_in_a_call_as_a_full_one(chars):
    """The steps per compiled call follow the step's cost, and a LoRA step runs through every frozen weight too:
    counted by its adapters alone it looked hundreds of times cheaper, and a call held a minute of GPT-2 steps."""
    from jupyter_llm.config import FitConfig
    from jupyter_llm.fitting.prepare import PreparedFit

    options = dict(steps=100, batch_size=512, display="none")
    full = PreparedFit(_small_gpt(chars.vocab_size), chars, FitConfig(**options))
    adapted = PreparedFit(_small_gpt(chars.vocab_size), chars, FitConfig(lora=4, lora_targets="c_attn", **options))
    # the cost decides here, not the epoch's length; the adapters add a few weights to the full model's
    assert 1 < adapted.steps_per_dispatch <= full.steps_per_dispatch < 100
