"""Pretrained GPT-2, offline: a tiny GPT-2 written by `transformers` itself (PyTorch, CPU) with a byte-level BPE
trained by `tokenizers` on a slice of tiny-shakespeare, read into our GPT, checked against transformers, fine-tuned,
sampled, and written back. Nothing is downloaded: the named checkpoints are tested through `file://` stand-ins.

Tolerance of the logits against transformers in float32: 1e-4 absolute, on logits up to 7.2 in magnitude (measured:
7.1e-6 loading, 7.4e-6 saving, 7e-7 for the bias-free model; XLA and PyTorch sum in different orders). Needs the
test extra (torch, transformers); skipped without them.
"""

import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jupyter_llm as jl
from jupyter_llm import hub
from jupyter_llm.data.tokenizers import BPETokenizer, tokenizer_from_dict
from jupyter_llm.errors import ChecksumError, ConfigError, PretrainedError
from jupyter_llm.models.generate import generate

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SHAKESPEARE = Path(__file__).parent.parent / "notebooks" / "data" / "tinyshakespeare.txt"
LOGIT_ATOL = 1e-4
EOT = "<|endoftext|>"


def byte_level_bpe(text: str, folder: Path) -> Path:
    """A 400-token byte-level BPE trained on `text`, saved in GPT-2's layout (tokenizer.json, vocab.json + merges.txt)
    into `folder`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=[EOT], show_progress=False)
    tok.train_from_iterator([text], trainer=trainer)
    tok.save(str(folder / "tokenizer.json"))
    tok.model.save(str(folder))
    return folder


def _hf_gpt2(folder: Path, tokenizer_dir: Path, *, n_positions: int, seed: int = 0, **config) -> Path:
    """A random GPT-2 saved by transformers (weights wide enough for logits of several units), with the tokenizer."""
    vocab = json.loads((tokenizer_dir / "vocab.json").read_text())
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=len(vocab), n_positions=n_positions, n_layer=2, n_head=2, n_embd=32,
                                  initializer_range=0.3, bos_token_id=vocab[EOT], eos_token_id=vocab[EOT], **config)
    transformers.GPT2LMHeadModel(cfg).eval().save_pretrained(folder)
    shutil.copy(tokenizer_dir / "tokenizer.json", folder)
    return folder


@pytest.fixture(scope="module")
def text_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "shakespeare.txt"
    path.write_text(SHAKESPEARE.read_text()[:100_000])
    return path


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory, text_path) -> Path:
    """A 400-token byte-level BPE in GPT-2's layout: tokenizer.json and the original vocab.json + merges.txt."""
    return byte_level_bpe(text_path.read_text(), tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, tok_dir) -> Path:
    return _hf_gpt2(tmp_path_factory.mktemp("tiny-gpt2"), tok_dir, n_positions=64)


def _hf_logits(folder, ids) -> np.ndarray:
    model = transformers.GPT2LMHeadModel.from_pretrained(folder).eval()
    with torch.no_grad():
        return model(torch.tensor(np.asarray(ids), dtype=torch.long)).logits.numpy()


@nnx.jit
def _forward(model, ids):
    return model(ids)


def _logits(model, ids) -> np.ndarray:
    """Our model's logits, compiled (an eager forward pass costs seconds of op-by-op compiling per shape)."""
    return np.asarray(_forward(model, jnp.asarray(ids, jnp.int32)))


def _ids(n=2, t=64, vocab=400, seed=0):
    return np.random.default_rng(seed).integers(0, vocab, (n, t))


def test_from_pretrained_gives_the_logits_of_transformers(hf_dir):
    model = jl.models.GPT.from_pretrained(hf_dir)
    c = model.config
    assert (c.n_layer, c.n_head, c.n_embd, c.block_size, c.bias, c.ln_eps, c.gelu_approximate) == \
        (2, 2, 32, 64, True, 1e-5, True)
    ids = _ids(vocab=c.vocab_size)
    ref = _hf_logits(hf_dir, ids)
    ours = _logits(model, ids)
    assert np.abs(ref).max() > 3  # logits that could disagree visibly
    np.testing.assert_allclose(ours, ref, atol=LOGIT_ATOL, rtol=0)
    short = jl.models.GPT.from_pretrained(hf_dir, block_size=16)  # the first 16 positions of the same weights
    assert short.config.block_size == 16
    np.testing.assert_allclose(_logits(short, ids[:, :16]), ref[:, :16], atol=LOGIT_ATOL, rtol=0)


def test_older_layout_loads_too(hf_dir, tmp_path):
    """openai-community/gpt2's own file: names without 'transformer.', the causal-mask buffers, a tied lm_head."""
    from safetensors.numpy import load_file, save_file

    tensors = {k.removeprefix("transformer."): v for k, v in load_file(hf_dir / "model.safetensors").items()}
    for i in range(2):
        tensors[f"h.{i}.attn.bias"] = np.tril(np.ones((64, 64), np.float32))[None, None]
    tensors["lm_head.weight"] = tensors["wte.weight"].copy()
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    shutil.copy(hf_dir / "config.json", tmp_path)
    old, new = jl.models.GPT.from_pretrained(tmp_path), jl.models.GPT.from_pretrained(hf_dir)
    assert all(np.array_equal(a, b) for a, b in zip(_params(old), _params(new), strict=True))


def test_tokenizer_gives_the_ids_of_transformers(hf_dir, tok_dir, text_path, tmp_path):
    sample = text_path.read_text()[-4000:] + f" héllo wörld 🙂 {EOT} two  spaces\n\n"
    fast = transformers.GPT2TokenizerFast.from_pretrained(tok_dir)
    want = fast(sample)["input_ids"]
    (tmp_path / "original").mkdir()
    for name in ("vocab.json", "merges.txt"):  # GPT-2's original pair only, no tokenizer.json
        shutil.copy(tok_dir / name, tmp_path / "original")
    sources = [tok_dir / "tokenizer.json", str(tok_dir), hf_dir, tmp_path / "original"]
    for source in sources:
        tok = BPETokenizer.from_file(source)
        assert tok.encode(sample).tolist() == want, source
        assert tok.decode(want) == sample == fast.decode(want)
    again = tokenizer_from_dict(json.loads(json.dumps(tok.to_dict())))  # what a checkpoint holds
    assert again.encode(sample).tolist() == want
    corpus = jl.datasets.text(text_path, tokenizer=hf_dir, block_size=32)
    assert corpus.vocab_size == len(fast) and corpus.train[:200].tolist() == fast(text_path.read_text())[
        "input_ids"][:200]


def test_save_pretrained_is_read_by_transformers(hf_dir, tok_dir, tmp_path):
    model = jl.models.GPT.from_pretrained(hf_dir)
    model.h[0].mlp.c_fc.kernel[...] = model.h[0].mlp.c_fc.kernel[...] * 1.5  # not the weights it was read from
    ids = _ids(vocab=model.config.vocab_size, seed=1)
    ours = _logits(model, ids)
    out = model.save_pretrained(tmp_path / "saved", tokenizer=BPETokenizer.from_file(tok_dir))
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    np.testing.assert_allclose(_hf_logits(out, ids), ours, atol=LOGIT_ATOL, rtol=0)
    fast = transformers.GPT2TokenizerFast.from_pretrained(out)
    assert fast("to be or not")["input_ids"] == BPETokenizer.from_file(out).encode("to be or not").tolist()
    back = jl.models.GPT.from_pretrained(out)
    assert all(np.array_equal(a, b) for a, b in zip(_params(model), _params(back), strict=True))


def test_a_gpt_without_biases_saves_as_gpt2_with_zero_biases(tmp_path):
    model = jl.models.GPT.from_preset("gpt-char-tiny", vocab_size=65, rngs=nnx.Rngs(0), n_layer=2)
    assert not model.config.bias
    ids = _ids(t=64, vocab=65)
    ours = _logits(model, ids)
    model.save_pretrained(tmp_path)
    np.testing.assert_allclose(_hf_logits(tmp_path, ids), ours, atol=LOGIT_ATOL, rtol=0)
    np.testing.assert_allclose(_logits(jl.models.GPT.from_pretrained(tmp_path), ids), ours, atol=1e-6, rtol=0)


def _params(model) -> list[np.ndarray]:
    return [np.asarray(v) for v in jax.tree.leaves(nnx.state(model, nnx.Param))]


def test_generation_with_bpe_and_a_kv_cache_at_1024_positions(tok_dir, tmp_path):
    folder = _hf_gpt2(tmp_path, tok_dir, n_positions=1024, seed=1)
    model = jl.models.GPT.from_pretrained(folder)
    tok = BPETokenizer.from_file(folder)
    assert model.config.block_size == 1024
    prompt = tok.encode("ROMEO:\nWhat light")
    new = generate(model, prompt, 24, temperature=0.0)  # the cached decode
    logits = _logits(model, np.concatenate([prompt, new])[None])[0]
    assert logits[len(prompt) - 1:-1].argmax(-1).tolist() == new.tolist()  # = one forward pass without a cache
    hf = transformers.GPT2LMHeadModel.from_pretrained(folder).eval()
    with torch.no_grad():
        theirs = hf.generate(torch.tensor([prompt.tolist()]), max_new_tokens=24, do_sample=False,
                             pad_token_id=tok.encode(EOT)[0])[0, len(prompt):].tolist()
    assert new.tolist() == theirs
    assert isinstance(tok.decode(new), str) and tok.decode(prompt) == "ROMEO:\nWhat light"
    sampled = generate(model, prompt, 40, temperature=1.0, top_k=20, seed=3)
    assert sampled.shape == (40,) and sampled.max() < model.config.vocab_size


def test_fine_tuning_a_loaded_gpt2_lowers_the_loss_and_keeps_its_tokenizer(hf_dir, text_path, tmp_path):
    model = jl.models.GPT.from_pretrained(hf_dir)
    corpus = jl.datasets.text(text_path, tokenizer=hf_dir, block_size=32)
    run = jl.fit(model, corpus, steps=60, eval_every=20, eval_batches=4, batch_size=16, lr=3e-3,
                 optimizer="adamw", display="none", checkpoint=tmp_path / "ckpt", save_every=60)
    loss = run.history["val_loss"]
    assert len(loss) == 3 and loss[0] > loss[1] > loss[2] and loss[2] < loss[0] - 0.3, loss
    assert run.generate("ROMEO:", 12, temperature=0.0) == corpus.tokenizer.decode(
        generate(run.model, corpus.tokenizer.encode("ROMEO:"), 12, temperature=0.0))  # %generate's path
    info = json.loads((tmp_path / "ckpt" / "60" / "info" / "metadata").read_text())
    saved = tokenizer_from_dict(info["meta"]["tokenizer"])  # the tokenizer travels with the checkpoint
    assert saved.encode("ROMEO: what light").tolist() == corpus.tokenizer.encode("ROMEO: what light").tolist()


# ----------------------------------------------------------------------------------------------- mistakes
def test_mistakes_get_one_clear_error(hf_dir, tok_dir, tmp_path, text_path):
    GPT = jl.models.GPT
    with pytest.raises(PretrainedError, match="There is no folder"):
        GPT.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="Did you mean 'gpt2'"):
        GPT.from_pretrained("gtp2")
    with pytest.raises(PretrainedError, match="is a file; give the folder"):
        GPT.from_pretrained(hf_dir / "config.json")
    (tmp_path / "bin").mkdir()
    shutil.copy(hf_dir / "config.json", tmp_path / "bin")
    (tmp_path / "bin" / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(PretrainedError, match="no model.safetensors.*pickle that jupyter_llm never reads"):
        GPT.from_pretrained(tmp_path / "bin")
    llama = tmp_path / "llama"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps({"model_type": "llama"}))
    shutil.copy(hf_dir / "model.safetensors", llama)
    with pytest.raises(PretrainedError, match="not a GPT-2 config.*'llama'"):
        GPT.from_pretrained(llama)
    wide = tmp_path / "wide"
    wide.mkdir()
    config = json.loads((hf_dir / "config.json").read_text())
    (wide / "config.json").write_text(json.dumps({**config, "n_embd": 64}))
    shutil.copy(hf_dir / "model.safetensors", wide)
    with pytest.raises(PretrainedError, match="do not belong together"):
        GPT.from_pretrained(wide)
    (wide / "config.json").write_text(json.dumps(config))
    (wide / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(PretrainedError, match="not a readable safetensors file"):
        GPT.from_pretrained(wide)
    with pytest.raises(ConfigError, match="block_size must be a whole number from 1 to the checkpoint's 64"):
        GPT.from_pretrained(hf_dir, block_size=128)
    with pytest.raises(PretrainedError, match="not pinned"):  # refused before any download
        GPT.from_pretrained("gpt2-medium")
    with pytest.raises(ConfigError, match="Did you mean 'gpt2'"):
        jl.datasets.text(text_path, tokenizer="gtp2")
    with pytest.raises(PretrainedError, match="no tokenizer file or folder"):
        jl.datasets.text(text_path, tokenizer=tmp_path / "missing.json")
    with pytest.raises(PretrainedError, match="not a Hugging Face tokenizer.json"):
        jl.datasets.text(text_path, tokenizer=hf_dir / "config.json")
    with pytest.raises(PretrainedError, match="holds no tokenizer.json"):
        jl.datasets.text(text_path, tokenizer=llama)
    with pytest.raises(ConfigError, match="has its own vocabulary"):
        jl.datasets.text(text_path, tokenizer=tok_dir, vocab_size=300)


# ----------------------------------------------------------------------------------------------- named ones
def test_a_named_checkpoint_is_downloaded_once_and_checked(hf_dir, tmp_path, monkeypatch, text_path):
    """The download path of gpt2 & co. with a `file://` Hub: pinned commit in the URL, SHA-256 checked, cached."""
    from jupyter_llm.download import file_hash

    files = ("config.json", "model.safetensors", "tokenizer.json")
    served = tmp_path / "hub" / "someone" / "tiny" / "resolve" / "abc123"
    served.mkdir(parents=True)
    for name in files:
        shutil.copy(hf_dir / name, served)
    pins = {name: file_hash(served / name) for name in files}
    monkeypatch.setitem(hub.CHECKPOINTS, "tiny", hub.Checkpoint("someone/tiny", "abc123", pins))
    monkeypatch.setitem(hub.TOKENIZER_OF, "tiny", "tiny")
    monkeypatch.setenv(hub.ENDPOINT_VAR, (tmp_path / "hub").as_uri())
    monkeypatch.setenv("JUPYTER_LLM_DATA", str(tmp_path / "cache"))
    model = jl.models.GPT.from_pretrained("tiny")
    cached = tmp_path / "cache" / "pretrained" / "someone--tiny" / "abc123"
    assert sorted(p.name for p in cached.iterdir()) == ["config.json", "model.safetensors"]
    corpus = jl.datasets.text(text_path, tokenizer="tiny", block_size=32)
    assert corpus.tokenizer.encode("to be").tolist() == BPETokenizer.from_file(hf_dir).encode("to be").tolist()
    shutil.rmtree(tmp_path / "hub")  # from now on only the cache has them
    again = jl.models.GPT.from_pretrained("tiny")
    assert all(np.array_equal(a, b) for a, b in zip(_params(again), _params(model), strict=True))
    (cached / "config.json").write_text("{}")  # a damaged cache with no source left: refused, never loaded
    with pytest.raises(jl.JupyterLLMError, match="Could not download tiny's config.json"):
        jl.models.GPT.from_pretrained("tiny")
    served.mkdir(parents=True)
    shutil.copy(hf_dir / "model.safetensors", served / "config.json")  # the wrong bytes under the right name
    with pytest.raises(ChecksumError, match="does not match its published checksum"):
        jl.models.GPT.from_pretrained("tiny")


class _FakeHub:
    """A local stand-in for the Hub: HEAD of an LFS file answers a redirect carrying `X-Linked-Etag` (its SHA-256),
    of a small file its git object id as `ETag`; GET serves the bytes (an LFS file from the redirect's target)."""

    def __init__(self, files: dict, lie: bool = False):
        import http.server
        import threading

        from jupyter_llm.download import GIT_BLOB_SHA1, file_hash

        hub_ = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self, body: bool):
                name = self.path.rsplit("/", 1)[-1]
                path = files.get(name)
                if path is None or not (self.path.startswith("/someone/tiny/resolve/abc123/")
                                        or self.path.startswith("/cdn/")):
                    self.send_response(404)
                    self.end_headers()
                    return
                hub_.requests.append((self.command, self.path))
                if name.endswith(".safetensors") and self.path.startswith("/someone/"):
                    digest = "0" * 64 if lie else file_hash(path)
                    self.send_response(302)
                    self.send_header("X-Linked-Etag", f'"{digest}"')
                    self.send_header("Location", f"/cdn/{name}")
                    self.end_headers()
                    return
                data = open(path, "rb").read()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                if self.path.startswith("/someone/"):
                    self.send_header("ETag", f'"{file_hash(path, GIT_BLOB_SHA1)}"')
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def do_HEAD(self):
                self._answer(body=False)

            def do_GET(self):
                self._answer(body=True)

            def log_message(self, *args):
                pass

        self.requests: list = []
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_an_unpinned_file_is_checked_against_the_digest_the_hub_announces(hf_dir, tmp_path, monkeypatch, capsys):
    """gpt2-medium and gpt2-large are pinned to commits but not to digests: their files are checked against the
    digests the Hub announces (LFS SHA-256, git object id), recorded, and checked again offline on later loads."""
    from jupyter_llm.download import file_hash

    monkeypatch.setitem(hub.CHECKPOINTS, "tiny", hub.Checkpoint("someone/tiny", "abc123",
                                                                {"config.json": None, "model.safetensors": None}))
    monkeypatch.setenv("JUPYTER_LLM_DATA", str(tmp_path / "cache"))
    files = {name: hf_dir / name for name in ("config.json", "model.safetensors")}
    liar = _FakeHub(files, lie=True)
    monkeypatch.setenv(hub.ENDPOINT_VAR, liar.url)
    try:
        with pytest.raises(ChecksumError, match="does not match its published checksum"):
            jl.models.GPT.from_pretrained("tiny")
    finally:
        liar.close()
    fake = _FakeHub(files)
    monkeypatch.setenv(hub.ENDPOINT_VAR, fake.url)
    try:
        model = jl.models.GPT.from_pretrained("tiny")
    finally:
        fake.close()
    assert ("HEAD", "/someone/tiny/resolve/abc123/model.safetensors") in fake.requests
    assert file_hash(hf_dir / "model.safetensors") in capsys.readouterr().err  # printed, to pin
    reference = jl.models.GPT.from_pretrained(hf_dir)
    assert all(np.array_equal(a, b) for a, b in zip(_params(model), _params(reference), strict=True))
    again = jl.models.GPT.from_pretrained("tiny")  # the server is gone: the recorded digests check the cache
    assert all(np.array_equal(a, b) for a, b in zip(_params(again), _params(reference), strict=True))
    cached = tmp_path / "cache" / "pretrained" / "someone--tiny" / "abc123"
    weights = (cached / "model.safetensors").read_bytes()
    (cached / "model.safetensors").write_bytes(weights[:-8] + bytes(8))  # damaged: checked, refused, not loaded
    with pytest.raises(jl.JupyterLLMError, match="Could not download tiny's model.safetensors"):
        jl.models.GPT.from_pretrained("tiny")
    monkeypatch.setenv(hub.ENDPOINT_VAR, (tmp_path / "nowhere").as_uri())
    (cached / ".config.json.digest.json").unlink()
    with pytest.raises(PretrainedError, match="the Hub announced none"):  # no digest to check against: refused
        hub.hub_file("tiny", "config.json")


def test_every_named_checkpoint_is_pinned_to_a_commit():
    for name, ckpt in hub.CHECKPOINTS.items():
        assert len(ckpt.revision) == 40 and int(ckpt.revision, 16) >= 0, name
        assert {"config.json", "model.safetensors"} <= set(ckpt.sha256), name
        assert all(d is None or len(d) == 64 for d in ckpt.sha256.values()), name
        assert f"/resolve/{ckpt.revision}/" in hub.url(name, "config.json")
    assert hub.CHECKPOINTS["gpt2"].sha256["tokenizer.json"]  # what tokenizer="gpt2" needs
