"""Run: what a fit leaves behind — the trained model, its history and configuration, and ways to use them."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jupyter_llm.data.coerce import as_array, check_class_labels, check_split
from jupyter_llm.data.dataset import Dataset
from jupyter_llm.data.plans import ordered_plan
from jupyter_llm.errors import ConfigError, DataError
from jupyter_llm.fitting.classify import check_has_probabilities, classify
from jupyter_llm.fitting.classify import probabilities as to_probabilities
from jupyter_llm.fitting.prepare import means
from jupyter_llm.train.metrics import CLASSES, KIND_OF_LOSS
from jupyter_llm.train.state import split_model, trainable_for

PREDICT_BATCH = 1024


class NoData:
    """The data source of a run loaded without its data (`jl.load(dir)`): no split to evaluate, but arrays given to
    `evaluate((x, y))` are placed by its layout. `origin` is what the saved run recorded of its data."""

    evaluable = ()

    def __init__(self, layout, directory: str, origin: dict):
        self.layout, self.directory, self.origin = layout, directory, origin or {}

    def no_split(self, split: str) -> str:
        named = self.origin.get("loaded_as") or self.origin.get("path")
        data = f"data={named!r} (what it was trained on)" if named else "data=... (what it was trained on)"
        return (f"This run was loaded from {self.directory} without its data, so it has no {split!r} split to "
                f"evaluate: load it with its data, jl.load({self.directory!r}, {data}), or pass arrays, "
                "run.evaluate((x, y)).")


class Run:
    """The result of `fit` / `%%train`.

    `model` is the user's model object, which holds the trained weights; `history` maps each logged quantity
    (`loss`, `val_loss`, `accuracy`, `val_accuracy`, ...) to its per-epoch values; `config` is the frozen
    configuration; `reason` says how the fit ended (completed, interrupted, nan, ...).
    """

    def __init__(self, *, model, config, dataset, source, history_sink, chunks, loss_name: str, state, position=None,
                 loaded_from: str | None = None, tokenizer=None, at_step: int | None = None,
                 output_kind: str | None = None):
        """`at_step`: this Run holds a copy of a running fit's weights after that step (`run.snapshot()`)."""
        self.model = model
        self.config = config
        self.dataset = dataset
        self._source = source
        self._sink = history_sink
        self._chunks = chunks
        self.loss_name = loss_name
        self.output_kind = output_kind or KIND_OF_LOSS.get(loss_name, CLASSES)  # how outputs read: train/metrics.py
        self.state = state  # the final TrainState (optimizer included), for resuming
        self.position = position  # where the loop stood (epoch, chunk, partial sums), for resuming
        self.loaded_from = loaded_from  # the folder `jl.load` read this run from (None: fitted in this process)
        self._tokenizer = tokenizer  # a loaded run's tokenizer (a fitted run's is its data's)
        self._at_step = at_step

    # -- what happened ---------------------------------------------------------------------------------------
    @property
    def history(self) -> dict[str, list[float]]:
        return self._sink.history

    @property
    def log(self) -> list[dict]:
        return self._sink.log

    @property
    def changes(self) -> list[dict]:
        """The optimizer numbers changed while the fit ran (`run.set`): {"step": ..., "lr": ...}, in order."""
        return self._sink.changes

    @property
    def trace(self) -> list[tuple[int, float]]:
        """(step, training loss) pairs at the reporting cadence, thinned to a bounded length."""
        return self._sink.trace

    @property
    def reason(self) -> str:
        if self._at_step is not None:
            return "running"
        return self._sink.end.reason if self._sink.end else "failed"

    @property
    def step(self) -> int:
        if self._at_step is not None:
            return self._at_step
        return self._sink.end.step if self._sink.end else 0

    @property
    def test_metrics(self) -> dict[str, float] | None:
        return self._sink.end.test_metrics if self._sink.end else None

    @property
    def compile_seconds(self) -> float:
        return self._sink.end.compile_seconds if self._sink.end else 0.0

    @property
    def memory(self) -> dict[str, int] | None:
        """Bytes per device, part by part (parameters, optimizer state, data, step temporaries), from the layout and
        XLA's memory analysis of the compiled step."""
        return dict(self._sink.end.memory) if self._sink.end and self._sink.end.memory else None

    @property
    def splits(self) -> tuple[str, ...]:
        """The names of the splits `evaluate` takes (none for a run loaded without its data)."""
        return tuple(self._source.evaluable)

    @property
    def elapsed(self) -> float:
        return self._sink.end.elapsed if self._sink.end else 0.0

    # -- using the model -------------------------------------------------------------------------------------
    def _weights(self):
        _, params, rest = split_model(self.model, train=False, trainable=trainable_for(self.config))
        return params, rest

    def evaluate(self, split_or_arrays: Any = "test") -> dict[str, float]:
        """Loss and metrics of the current model on a split name ("train", "validation", "test") or `(x, y)`."""
        params, rest = self._weights()
        if isinstance(split_or_arrays, str):
            if isinstance(self._source, NoData):
                raise DataError(self._source.no_split(split_or_arrays))
            if split_or_arrays not in self._source.evaluable:
                raise DataError(f"This run's data has no {split_or_arrays!r} split to evaluate; it has "
                                f"{', '.join(self._source.evaluable)}. Pass one of those names or an (x, y) pair.")
            data, idx, w = self._source.for_eval(split_or_arrays)  # placed for this call only
            sums = self._chunks.evaluate(params, rest, data, idx, w)
            return self._source.derive(means(jax.device_get(sums)))
        elif isinstance(split_or_arrays, Dataset):
            split = split_or_arrays.test or split_or_arrays.validation or split_or_arrays.train
        else:
            split = split_or_arrays
        x, y = check_split(split, "evaluation", required=True)
        self._check_like_training(x, y, "evaluation")
        batch = min(self.config.batch_size * 8, len(x))
        idx, w = ordered_plan(len(x), batch)
        data = self._source.layout.put((x, y))
        return means(jax.device_get(self._chunks.evaluate(params, rest, data, idx, w)))

    def _check_like_training(self, x, y, what: str) -> None:
        """Arrays given to evaluate/predict shaped like the fit's own examples (and, for classes, labels in range):
        otherwise the compiled step fails deep inside, or the loss comes out NaN."""
        if not isinstance(self.dataset, Dataset):
            return  # token windows: any length up to the context is fine, the model says if not
        example, labels = self._source.example, self._source.labels
        same = x.ndim == example.ndim if self.tokenizer is not None else x.shape[1:] == example.shape[1:]
        if not same:  # token ids (a text classifier) may come in another length
            raise DataError(f"The {what} inputs have shape {x.shape[1:]} per example, but the model was trained on "
                            f"{example.shape[1:]}; pass inputs shaped like the training data.")
        if y is None:
            return
        if y.shape[1:] != labels.shape[1:] or (y.dtype.kind in "iu") != (labels.dtype.kind in "iu"):
            raise DataError(f"The {what} labels are {y.dtype} of shape {y.shape[1:]} per example, but the model was "
                            f"trained on {labels.dtype} labels of shape {labels.shape[1:]}.")
        if self.loss_name == "cross_entropy":
            params, rest = self._weights()
            spec = jax.ShapeDtypeStruct((1, *example.shape[1:]), example.dtype)
            check_class_labels(y, jax.eval_shape(self._chunks.predict, params, rest, spec).shape[-1], what)

    def predict(self, x, probabilities: bool = False) -> np.ndarray:
        """Model outputs (logits for classifiers) for inputs `x`, computed in batches with the eval-mode model;
        `probabilities=True`: their softmax (class scores) or sigmoid (binary logits) instead."""
        if probabilities:
            check_has_probabilities(self.output_kind)
        outputs = self._predict(x)
        return to_probabilities(outputs, self.output_kind) if probabilities else outputs

    def classify(self, texts_or_x):
        """The class of each input, as `Prediction(label, probability, probabilities)`: a list, or one for a single
        text. Texts are encoded with the fit's tokenizer (a text classifier); arrays go to the model as they are.
        Labels are the data's `class_names` (else "0", "1", ...)."""
        return classify(self, texts_or_x)

    def _predict(self, x) -> np.ndarray:
        x = as_array(x, "The inputs to predict")
        if x.ndim == 0:
            raise DataError(f"predict takes a batch of inputs with an example dimension; got a scalar {x!r}.")
        self._check_like_training(x, None, "predict")
        params, rest = self._weights()
        outs = [self._chunks.predict(params, rest, jnp.asarray(x[i:i + PREDICT_BATCH]))
                for i in range(0, len(x), PREDICT_BATCH)]
        return np.concatenate(jax.device_get(outs)) if outs else np.zeros((0,))

    # -- language models -------------------------------------------------------------------------------------
    @property
    def tokenizer(self):
        """The tokenizer of a language-model or text-classification fit (None for array data)."""
        if self._tokenizer is not None:
            return self._tokenizer
        tok = getattr(self.dataset, "tokenizer", None)
        return tok if tok is not None else getattr(self.dataset, "meta", {}).get("tokenizer")

    def _prompt_ids(self, prompt: str):
        tok = self.tokenizer
        if tok is None:
            raise DataError("This run was not trained on text, so it cannot generate: train a language model on "
                            "jl.datasets.text(...) or jl.datasets.load('tinyshakespeare').")
        if prompt == "":
            start = getattr(tok, "start_id", None)  # GPT-2's <|endoftext|>, not whatever token has id 0
            if start is not None:
                return np.asarray([start], np.int32)
            newline = "\n" if "\n" in getattr(tok, "chars", ["\n"]) else None
            return tok.encode(newline) if newline else np.zeros((1,), np.int32)
        return tok.encode(prompt)

    def generate(self, prompt: str = "", max_new_tokens: int = 200, *, temperature: float = 1.0,
                 top_k: int | None = None, seed: int = 0, stop_at_end: bool = True) -> str:
        """Text sampled from the trained language model after `prompt` (decoded with the fit's tokenizer).
        `stop_at_end`: end the text at the vocabulary's end-of-text token (GPT-2's <|endoftext|>, the end of an
        instruction's response), which is left out, as transformers stops at its eos token."""
        from jupyter_llm.models.generate import generate

        ids = generate(self.model, self._prompt_ids(prompt), max_new_tokens, temperature=temperature, top_k=top_k,
                       seed=seed)
        ids = np.asarray(ids).reshape(-1).tolist()
        end = self._end_id() if stop_at_end else None
        return self.tokenizer.decode(ids[:ids.index(end)] if end in ids else ids)

    def _end_id(self):
        from jupyter_llm.data.tokenizers import end_of_text_id

        return end_of_text_id(self.tokenizer)

    def generate_stream(self, prompt: str = "", max_new_tokens: int = 200, *, temperature: float = 1.0,
                        top_k: int | None = None, seed: int = 0, chunk: int = 16, stop_at_end: bool = True):
        """Like `generate`, yielding pieces of text as they are produced (what `%generate` prints); with
        `stop_at_end` it ends at the end-of-text token, without computing the chunks after it."""
        from jupyter_llm.models.generate import generate_stream

        end = self._end_id() if stop_at_end else None
        new, shown = [], ""
        for ids in generate_stream(self.model, self._prompt_ids(prompt), max_new_tokens, temperature=temperature,
                                   top_k=top_k, seed=seed, chunk=chunk):
            # decoded as a whole: a character whose bytes span two chunks (byte-level BPE) is never cut in two;
            # a trailing U+FFFD is an incomplete one, held back until its last bytes come
            new.extend(np.asarray(ids).reshape(-1).tolist())
            ended = end is not None and end in new
            if ended:
                new = new[:new.index(end)]
            ready = self.tokenizer.decode(new).rstrip("\ufffd")
            if len(ready) > len(shown) and ready.startswith(shown):
                yield ready[len(shown):]
                shown = ready
            if ended:
                break
        rest = self.tokenizer.decode(new) if new else ""
        if len(rest) > len(shown):
            yield rest[len(shown):]

    def save_pretrained(self, directory):
        """Write the trained model in Hugging Face's GPT-2 format (LoRA adapters merged into the weights), with the
        fit's tokenizer when it is a BPE one: transformers and `GPT.from_pretrained` load the folder."""
        save = getattr(self.model, "save_pretrained", None)
        if save is None:
            raise ConfigError(f"save_pretrained writes a jl.models.GPT in Hugging Face's GPT-2 format; this run's "
                              f"model is a {type(self.model).__name__}. Save it with --checkpoint instead.")
        tok = self.tokenizer
        return save(directory, tokenizer=tok if callable(getattr(tok, "save_pretrained", None)) else None)

    def save(self, directory) -> str:
        """Write this run to `directory` as a checkpoint (weights, optimizer state, position, history,
        configuration, tokenizer, the model's architecture; Orbax arrays and JSON, never pickle), atomically:
        `jl.load(directory)` makes the Run again, and `--resume directory` continues the fit. The folder must be
        new, empty, or hold only this library's checkpoints of this run (older steps are kept). Returns its path."""
        from jupyter_llm.fitting.save import save_run

        return save_run(self, directory)

    # -- display ---------------------------------------------------------------------------------------------
    def summary(self) -> str:
        last = {k: v[-1] for k, v in self.history.items() if v}
        loaded = f"loaded from {self.loaded_from}: " if self.loaded_from else ""
        parts = [f"Run({type(self.model).__name__}, {loaded}{self.reason} at step {self.step}"]
        if last:
            parts.append(", " + " ".join(f"{k}={v:.4g}" for k, v in last.items()))
        if self.test_metrics:
            parts.append(", " + " ".join(f"test_{k}={v:.4g}" for k, v in self.test_metrics.items()))
        return "".join(parts) + ")"

    def __repr__(self) -> str:
        return self.summary()

    def _report(self):
        try:
            from jupyter_llm.sinks.report import Report
        except ImportError:
            return None
        if self._sink.start is None or self._sink.end is None:
            return None
        return Report(self._sink.start, self._sink.end, trace=self.trace, log=self.log, evals=self._sink.evals,
                      changes=self.changes)

    def _repr_html_(self):
        report = self._report()
        return report._repr_html_() if report is not None else None
