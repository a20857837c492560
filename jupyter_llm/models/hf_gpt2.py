"""Our GPT in Hugging Face's GPT-2 format, both ways: a folder with `config.json` and `model.safetensors`.

The format, as `transformers`' GPT2LMHeadModel writes and reads it: tensors `wte.weight` (vocab, C), `wpe.weight`
(positions, C), per block `h.{i}.ln_1.{weight,bias}`, `h.{i}.attn.c_attn.{weight (C, 3C), bias}`,
`h.{i}.attn.c_proj`, `h.{i}.ln_2`, `h.{i}.mlp.c_fc.{weight (C, 4C), bias}`, `h.{i}.mlp.c_proj`, then `ln_f`; newer
saves prefix every name with `transformer.`, older ones also hold the causal-mask buffers `h.{i}.attn.bias` /
`attn.masked_bias` (not weights: skipped) and some a `lm_head.weight` equal to `wte.weight` (the output layer is
tied to the token embedding, as in ours). GPT-2's Conv1D keeps its weight as [in, out], which is exactly the layout of
`nnx.Linear`'s kernel, so weights copy over without a transpose; `c_attn`'s 3C outputs are q, k, v, each split into
heads, the order our attention reshapes them in. The names map one to one onto ours (`weight` is `kernel`, `scale`
or `embedding`), so a GPT-2 is our GPT with `bias=True` and the config's epsilon, GELU form and MLP width.

Tensors are read with `safetensors`' NumPy API one at a time (no torch, no pickle, peak memory about one model), into
a model built abstractly (`nnx.eval_shape`), so no random initialisation is computed only to be overwritten.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jupyter_llm.errors import ConfigError, PretrainedError
from jupyter_llm.models.lora import has_adapters, merged

CONFIG, WEIGHTS = "config.json", "model.safetensors"
_PREFIX = "transformer."
_BUFFERS = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers of older saves: not weights
# transformers' GPT2Config defaults, used for keys a config.json leaves out (as transformers itself does)
_HF_DEFAULTS = {"vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12,
                "n_inner": None, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5}
_TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")  # the same tanh formula; "gelu" is the exact form
_EOT = 50256  # GPT-2's <|endoftext|>: its bos and eos token


# ------------------------------------------------------------------------------------------------ config.json
def gpt_kwargs(hf: dict, where: str) -> dict:
    """GPT constructor arguments from a Hugging Face GPT-2 config; refuses what our GPT cannot compute."""
    if not isinstance(hf, dict) or hf.get("model_type") != "gpt2":
        kind = hf.get("model_type") if isinstance(hf, dict) else type(hf).__name__
        raise PretrainedError(f"{where} is not a GPT-2 config (model_type {kind!r}, not 'gpt2'): only GPT-2 "
                              "checkpoints load into jupyter_llm's GPT.")
    c = {**_HF_DEFAULTS, **hf}
    unsupported = {"scale_attn_weights": (False, True), "scale_attn_by_inverse_layer_idx": (True, False),
                   "add_cross_attention": (True, False), "tie_word_embeddings": (False, True)}
    for key, (bad, ours) in unsupported.items():
        if c.get(key) is bad:
            raise PretrainedError(f"{where} sets {key}={json.dumps(bad)}; jupyter_llm's GPT computes only "
                                  f"{key}={json.dumps(ours)}, so this checkpoint cannot load into it.")
    act = c["activation_function"]
    if act not in (*_TANH_GELUS, "gelu"):
        raise PretrainedError(f"{where} uses activation_function {act!r}; jupyter_llm's GPT has the GELU of GPT-2 "
                              f"({', '.join(_TANH_GELUS)}: tanh form) or the exact 'gelu'.")
    try:
        out = {k: int(c[hk]) for k, hk in (("vocab_size", "vocab_size"), ("block_size", "n_positions"),
                                          ("n_layer", "n_layer"), ("n_head", "n_head"), ("n_embd", "n_embd"))}
        out.update(ln_eps=float(c["layer_norm_epsilon"]), gelu_approximate=act != "gelu",
                   n_inner=None if c["n_inner"] is None else int(c["n_inner"]))
    except (TypeError, ValueError) as exc:
        raise PretrainedError(f"{where} has a size that is not a number ({exc}).") from None
    if min(out["vocab_size"], out["block_size"], out["n_layer"], out["n_head"], out["n_embd"]) < 1:
        raise PretrainedError(f"{where} has a size below 1: {out}.")
    return out


def hf_config(config) -> dict:
    """The Hugging Face GPT-2 config.json of a GPTConfig (every GPT of ours is a GPT-2 once biases are added)."""
    bos = _EOT if config.vocab_size > _EOT else None
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": config.vocab_size, "n_positions": config.block_size, "n_ctx": config.block_size,
        "n_embd": config.n_embd, "n_layer": config.n_layer, "n_head": config.n_head, "n_inner": config.n_inner,
        "activation_function": "gelu_new" if config.gelu_approximate else "gelu",
        "layer_norm_epsilon": config.ln_eps, "resid_pdrop": config.dropout, "embd_pdrop": config.dropout,
        "attn_pdrop": 0.0,  # ours has no dropout on the attention weights
        "initializer_range": 0.02, "scale_attn_weights": True, "tie_word_embeddings": True,
        "bos_token_id": bos, "eos_token_id": bos,
    }


# ------------------------------------------------------------------------------------------------ tensor names
def hf_name(path: tuple) -> str:
    """The Hugging Face name (without `transformer.`) of one of our parameters, e.g. ('h', 0, 'attn', 'c_attn',
    'kernel') -> 'h.0.attn.c_attn.weight'."""
    *module, leaf = path
    leaf = {"kernel": "weight", "scale": "weight", "embedding": "weight"}.get(leaf, leaf)
    return ".".join(str(p) for p in (*module, leaf))


def _abstract(cls, kwargs: dict, rngs: nnx.Rngs):
    """(graphdef, abstract Param state, concrete rest) of `cls(**kwargs)`: no weight is ever initialised; the rest
    (dropout's RNG streams) is computed under jit, where the unused random weights are dead code."""
    graphdef, params, _ = nnx.split(nnx.eval_shape(lambda r: cls(**kwargs, rngs=r), rngs), nnx.Param, ...)
    rest = nnx.jit(lambda r: nnx.state(cls(**kwargs, rngs=r), nnx.Not(nnx.Param)))(rngs)
    return graphdef, params, rest


# ------------------------------------------------------------------------------------------------ loading
def resolve(source, cache_dir=None) -> tuple[Path, Path, str]:
    """(config.json, model.safetensors, a name for messages) of a pinned checkpoint name or a local folder."""
    from jupyter_llm import hub

    if isinstance(source, str) and source in hub.CHECKPOINTS:
        return hub.hub_file(source, CONFIG, cache_dir=cache_dir), hub.hub_file(source, WEIGHTS,
                                                                                cache_dir=cache_dir), source
    if not isinstance(source, (str, os.PathLike)):
        raise ConfigError(f"from_pretrained takes a model name ({', '.join(hub.CHECKPOINTS)}) or a folder path, got "
                          f"{type(source).__name__}.")
    folder = Path(os.path.expanduser(str(source)))
    if not folder.exists():
        if isinstance(source, str) and os.sep not in source and "/" not in source:
            hub.checkpoint(source)  # an unknown name: its ConfigError lists the names
        raise PretrainedError(f"There is no folder {str(folder)!r}; give a folder holding {CONFIG} and {WEIGHTS} "
                              f"(what transformers' save_pretrained writes) or a name: {', '.join(hub.CHECKPOINTS)}.")
    if not folder.is_dir():
        raise PretrainedError(f"{str(folder)!r} is a file; give the folder that holds {CONFIG} and {WEIGHTS}.")
    missing = [f for f in (CONFIG, WEIGHTS) if not (folder / f).is_file()]
    if missing:
        found = sorted(p.name for p in folder.iterdir())[:8]
        advice = ""
        if WEIGHTS in missing and (folder / "pytorch_model.bin").exists():
            advice = (" It has pytorch_model.bin, a pickle that jupyter_llm never reads: convert it once with "
                      "transformers (GPT2LMHeadModel.from_pretrained(folder).save_pretrained(folder)).")
        elif WEIGHTS in missing and (folder / f"{WEIGHTS}.index.json").exists():
            advice = " Its weights are sharded into several files, which jupyter_llm does not read yet."
        raise PretrainedError(f"{str(folder)!r} has no {' and no '.join(missing)} (it holds: "
                              f"{', '.join(found) or 'nothing'}); a GPT-2 folder holds {CONFIG} and {WEIGHTS}.{advice}")
    return folder / CONFIG, folder / WEIGHTS, str(folder)


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PretrainedError(f"Cannot read {str(path)!r} as JSON ({exc}).") from None


def load(cls, source, *, dropout: float = 0.0, block_size: int | None = None, rngs: nnx.Rngs | None = None,
         cache_dir=None):
    """A `cls` (our GPT) holding the weights of a Hugging Face GPT-2 checkpoint; see `GPT.from_pretrained`."""
    from safetensors import SafetensorError, safe_open

    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout must be a number in [0, 1), got {dropout!r}.")
    config_path, weights_path, label = resolve(source, cache_dir)
    kwargs = gpt_kwargs(read_json(config_path), f"{label}'s {CONFIG}")
    positions = kwargs["block_size"]
    if block_size is not None:
        if isinstance(block_size, bool) or not isinstance(block_size, int) or not 1 <= block_size <= positions:
            raise ConfigError(f"block_size must be a whole number from 1 to the checkpoint's {positions} positions, "
                              f"got {block_size!r}.")
        kwargs["block_size"] = block_size
    graphdef, params, rest = _abstract(cls, {**kwargs, "dropout": float(dropout), "bias": True},
                                       rngs if rngs is not None else nnx.Rngs(0))
    try:
        with safe_open(str(weights_path), framework="np") as f:
            names = {n.removeprefix(_PREFIX): n for n in f.keys()}
            for path, var in nnx.to_flat_state(params):
                name = hf_name(path)
                if name not in names:
                    raise PretrainedError(f"{label}'s {WEIGHTS} has no tensor {name!r}; it does not hold the GPT-2 "
                                          f"its {CONFIG} describes.")
                value = _tensor(f, names.pop(name), label)
                if name == "wpe.weight":
                    value = value[: kwargs["block_size"]]  # a shorter context keeps the first positions
                if value.shape != var.shape:
                    raise PretrainedError(f"{label}'s tensor {name!r} has shape {value.shape}, but its {CONFIG} "
                                          f"makes it {var.shape}: the two files do not belong together.")
                var.set_value(jnp.asarray(value))
            if "lm_head.weight" in names:  # an explicit output layer: loadable only if tied (equal to wte)
                head = _tensor(f, names.pop("lm_head.weight"), label)
                wte = np.asarray(params["wte"]["embedding"][...])
                if head.shape != wte.shape or not np.array_equal(head, wte):
                    raise PretrainedError(f"{label} has an output layer (lm_head) of its own; jupyter_llm's GPT ties "
                                          "it to the token embedding, as GPT-2 does, so it cannot load this one.")
    except SafetensorError as exc:
        raise PretrainedError(f"{str(weights_path)!r} is not a readable safetensors file ({exc}).") from None
    extra = sorted(n for n in names if not n.endswith(_BUFFERS))
    if extra:
        raise PretrainedError(f"{label}'s {WEIGHTS} holds tensors a GPT-2 language model has no place for: "
                              f"{', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''} (a model with another "
                              "head?). Save the GPT2LMHeadModel itself.")
    return nnx.merge(graphdef, params, rest)


def _tensor(f, name: str, label: str) -> np.ndarray:
    """One tensor as float32. NumPy has no bfloat16, so such files are refused with the way out."""
    dtype = f.get_slice(name).get_dtype()
    if dtype not in ("F32", "F16", "F64"):
        raise PretrainedError(f"{label}'s tensor {name!r} is stored as {dtype}, which jupyter_llm does not read; save "
                              "the model in float32 (transformers: model.float().save_pretrained(folder)).")
    return np.asarray(f.get_tensor(name), dtype=np.float32)


# ------------------------------------------------------------------------------------------------ saving
def save(model, directory, *, tokenizer=None) -> Path:
    """Write `model` as a Hugging Face GPT-2 folder; see `GPT.save_pretrained`. Returns the folder."""
    from safetensors.numpy import save_file

    if not isinstance(directory, (str, os.PathLike)):
        raise ConfigError(f"save_pretrained takes a folder path, got {type(directory).__name__}.")
    folder = Path(os.path.expanduser(str(directory)))
    if tokenizer is not None and not callable(getattr(tokenizer, "save_pretrained", None)):
        raise ConfigError("tokenizer= must be one that can be saved in Hugging Face's format (a BPE tokenizer: "
                          f"jl.datasets.text(..., tokenizer='bpe' or 'gpt2')), not {type(tokenizer).__name__}.")
    if folder.exists() and not folder.is_dir():
        raise PretrainedError(f"{str(folder)!r} is a file; save_pretrained writes a folder (config.json and "
                              "model.safetensors): give a new or existing folder's path.")
    if has_adapters(model):  # LoRA: the adapters folded into the kernels, the format every GPT-2 reader knows
        model = merged(model)
    config = model.config
    ours = {hf_name(path): var for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    # a bias-free GPT of ours is the GPT-2 whose biases are zero: the full list of names and shapes is GPT-2's
    gpt2 = nnx.eval_shape(lambda: type(model)(**{**dataclasses.asdict(config), "bias": True}, rngs=nnx.Rngs(0)))
    tensors = {}
    for path, var in nnx.to_flat_state(nnx.state(gpt2, nnx.Param)):
        name = hf_name(path)
        value = np.asarray(ours[name][...], np.float32) if name in ours else np.zeros(var.shape, np.float32)
        tensors[_PREFIX + name] = np.ascontiguousarray(value)
    folder.mkdir(parents=True, exist_ok=True)
    _replace(folder / WEIGHTS, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    text = json.dumps(hf_config(config), indent=2) + "\n"
    _replace(folder / CONFIG, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder


def _replace(target: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: a crash never leaves half a file."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
