"""`%%train` / `%train`: run the cell body, resolve names in the notebook, call `jl.fit`, bind the Run.

The magic only parses, resolves and binds; everything else is `jupyter_llm.fit`, the same function a script calls.
A user mistake becomes one `UsageError` line, and nothing in the namespace changes until a fit has run.
"""

from __future__ import annotations

import types

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class

from jupyter_llm.config import LOSSES, OPTIMIZERS, is_metric_name
from jupyter_llm.errors import JupyterLLMError, a_or_an
from jupyter_llm.ipython import short_traceback
from jupyter_llm.ipython.parse import TrainArgs, parse_generate_line, parse_lr_find_line, parse_train_line, train_help
from jupyter_llm.options import speaking_flags

# options that may name an object in the namespace, with the names that stay the built-ins
_FIT_OBJECT_OPTIONS = {"optimizer": OPTIMIZERS, "loss": LOSSES}



@magics_class
class TrainMagics(Magics):
    @line_cell_magic
    def train(self, line: str, cell: str | None = None):
        try:
            args = parse_train_line(line)
        except JupyterLLMError as exc:
            raise UsageError(str(exc)) from None
        if cell and cell.strip():
            result = self.shell.run_cell(_numbered_as_in_the_cell(line, cell), store_history=False)
            if not result.success:
                raise UsageError("The cell body raised an error (shown above), so training did not start.")
        model, data, options = self._resolve(args)
        import jupyter_llm as jl

        try:
            with speaking_flags():
                run = jl.fit(model, data, background=args.background, cluster=args.cluster,
                             cluster_profile=args.cluster_profile, **options)
        except JupyterLLMError as exc:
            raise UsageError(str(exc)) from None
        if args.background:
            run.name = args.out
        self.shell.push({args.out: run})

    @line_magic
    def lr_find(self, line: str):
        """Learning-rate range test on the notebook's model and data; the model's weights are left unchanged.

        %lr_find [--model NAME] [--data NAME] [--min-lr 1e-7] [--max-lr 10] [--steps 100] [--optimizer adam]
                 [--batch-size 32] [--seed 0] [--out lr_finder]
        """
        try:
            opts = parse_lr_find_line(line)
        except JupyterLLMError as exc:
            raise UsageError(str(exc)) from None
        model, data, _ = self._resolve(TrainArgs(opts.pop("model"), opts.pop("data"), opts["out"]))
        out = opts.pop("out")
        from jupyter_llm.fitting.lr_find import lr_find

        try:
            with speaking_flags():
                result = lr_find(model, data, **opts)
        except JupyterLLMError as exc:
            raise UsageError(str(exc)) from None
        self.shell.push({out: result})
        return result

    @line_magic
    def generate(self, line: str):
        """Stream text from a trained language model into the cell output.

        %generate [--run run] [--tokens 200] [--temperature 0.8] [--top-k K] [--seed 0] PROMPT
        (a prompt that starts with "-" goes after "--": %generate --tokens 50 -- -the prompt)
        """
        try:
            opts, prompt = parse_generate_line(line)
        except JupyterLLMError as exc:
            raise UsageError(str(exc)) from None
        from jupyter_llm.fitting.run import Run

        run = self.shell.user_ns.get(opts["run"])
        if not isinstance(run, Run):
            raise UsageError(f"--run {opts['run']!r} is not a Run in the notebook; train a language model with "
                             "%%train first, or pass --run NAME.")
        import sys

        try:
            stream = run.generate_stream(prompt, opts["tokens"], temperature=opts["temperature"],
                                         top_k=opts["top_k"], seed=opts["seed"])
            first = next(stream, "")  # a bad prompt or option fails here, before anything is printed
            sys.stdout.write(prompt + first)
            sys.stdout.flush()
            for piece in stream:
                sys.stdout.write(piece)
                sys.stdout.flush()
            sys.stdout.write("\n")
        except JupyterLLMError as exc:
            raise UsageError(str(exc)) from None
        except KeyboardInterrupt:  # the stop button: keep what was printed, no traceback
            sys.stdout.write("\n[generation stopped]\n")

    def _resolve(self, args):
        ns = self.shell.user_ns
        if args.model not in ns:
            raise UsageError(f"--model {args.model!r} names nothing in the notebook. Define it in the cell body, "
                             f"e.g. {args.model} = jl.models.MLP(...), or pass --model NAME.")
        from flax import nnx

        model = ns[args.model]
        if not isinstance(model, nnx.Module):
            kind = a_or_an(type(model).__name__)
            raise UsageError(f"--model {args.model!r} is {kind}, not a flax.nnx.Module. Pass the "
                             "name of a model, e.g. jl.models.MLP(...) or your own nnx.Module subclass.")
        if args.data in ns:
            data = ns[args.data]
        else:
            from jupyter_llm.datasets import available

            if args.data not in available():
                raise UsageError(f"--data {args.data!r} names nothing in the notebook and is not a built-in dataset "
                                 f"({', '.join(available())}). Define it, e.g. {args.data} = "
                                 "jl.datasets.load('digits') or (x, y), or pass --data NAME.")
            data = args.data
        self._check_out(args)
        options = dict(args.fit_options)
        if options.get("resume") is True and not options.get("checkpoint"):
            from jupyter_llm.fitting.run import Run

            previous = ns.get(args.out)
            if not isinstance(previous, Run):
                raise UsageError(f"--resume continues the run bound to {args.out!r}, but there is none. Give a "
                                 "checkpoint directory (--resume DIR), or run the fit once first.")
            options["resume"] = previous
        for name, built_in in _FIT_OBJECT_OPTIONS.items():
            value = options.get(name)
            if isinstance(value, str) and value not in built_in and value in ns and not isinstance(ns[value], str):
                options[name] = ns[value]  # a built-in name always means the built-in
        if isinstance(options.get("metrics"), str):  # --metrics accuracy,my_metric: a function of the notebook's
            parts = [p.strip() for p in options["metrics"].split(",") if p.strip()]
            if any(not is_metric_name(p) and callable(ns.get(p)) for p in parts):
                options["metrics"] = [(p, ns[p]) if not is_metric_name(p) and callable(ns.get(p)) else p
                                      for p in parts]
        return model, data, options

    def _check_out(self, args) -> None:
        """Refuse an --out that would overwrite what the next cell needs: the model, the data, or a module."""
        out = args.out
        for option, name in (("model", args.model), ("data", args.data)):
            if out == name:
                raise UsageError(f"--out {out!r} is also the --{option}: the result would replace the {option} in "
                                 "the notebook. Bind it to another name, e.g. --out run (run.model is the trained "
                                 "model).")
        value = self.shell.user_ns.get(out)
        if isinstance(value, types.ModuleType):
            raise UsageError(f"--out {out!r} would replace the module {out} ({value.__name__}) in the notebook. "
                             "Bind the result to another name, e.g. --out run.")


def _numbered_as_in_the_cell(line: str, body: str) -> str:
    """The body under its magic line, commented out, so a traceback's "line k" and its context are the cell's own
    (IPython numbers the body from 1 and drops its leading blank lines). A body that starts with another cell magic
    is left as it is: that magic must stay on its first line."""
    if body.lstrip().startswith("%%"):
        return body
    return f"# %%train {line}\n{body}"


TrainMagics.train.__doc__ = ("Train a Flax NNX model in one cell (the same as jupyter_llm.fit).\n\n"
                             "The cell body runs first as ordinary Python; then the model named by --model is trained "
                             "on --data and the resulting Run is bound to --out.\n\n" + train_help())

_LOADED_MESSAGE = ("jupyter_llm {version}: %%train is ready (%%train? lists the options); "
                   "`jl` (jupyter_llm) and `nnx` (flax.nnx) are in the namespace.")


def load(ipython) -> None:
    import jupyter_llm
    from jupyter_llm.ipython.runs_magic import RunsMagics

    ipython.register_magics(TrainMagics)
    ipython.register_magics(RunsMagics)
    short_traceback.install()
    from flax import nnx

    ipython.push({"jl": jupyter_llm, "nnx": nnx})
    print(_LOADED_MESSAGE.format(version=jupyter_llm.__version__))


def unload(ipython) -> None:
    short_traceback.uninstall()
    magics = ipython.magics_manager.magics
    for kind in ("line", "cell"):
        magics[kind].pop("train", None)
    for name in ("lr_find", "generate", "runs"):
        magics["line"].pop(name, None)
