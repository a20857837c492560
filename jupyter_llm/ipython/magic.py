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
_FIT_OBJECT_OPTIONS = {"optimizer": OPTIMIZERS, "loss": LOSSES, "changes": ()}



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
        after = self._after(args)
        import jupyter_llm as jl

        try:
            with speaking_flags():
                run = jl.fit(model, data, background=args.background, after=after, cluster=args.cluster,
                             cluster_profile=args.cluster_profile, **options)
        except JupyterLLMError as exc:
            raise UsageError(str(exc)) from None
        if args.background or after is not None:
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
        resume = options.get("resume")
        if resume is True and not options.get("checkpoint"):
            previous = ns.get(args.out)
            if not _is_run(previous):
                raise UsageError(f"--resume continues the run bound to {args.out!r}, but there is none. Give a "
                                 "checkpoint directory (--resume DIR), or run the fit once first.")
            options["resume"] = _finished(previous, args.out)
        elif isinstance(resume, str) and resume.isidentifier() and resume in ns:
            options["resume"] = _resume_source(resume, ns[resume])
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

    def _after(self, args):
        """The fit --after names: a background fit's handle (or a finished Run) in the namespace."""
        if args.after is None:
            return None
        from jupyter_llm.fitting.background import BackgroundRun
        from jupyter_llm.fitting.run import Run

        ns = self.shell.user_ns
        if args.after not in ns:
            raise UsageError(f"--after {args.after!r} names nothing in the notebook. Give the name a background fit "
                             "is bound to (its --out, e.g. --after run).")
        after = ns[args.after]
        if not isinstance(after, (BackgroundRun, Run)):
            raise UsageError(f"--after {args.after!r} is {a_or_an(type(after).__name__)}, not a fit. Give the name "
                             "a background fit is bound to (its --out, e.g. --after run).")
        if args.out == args.after:
            raise UsageError(f"--out {args.out!r} is also --after: the queued fit would replace the one it waits "
                             f"for in the notebook. Bind it to another name, e.g. --out {args.after}2.")
        return after

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


def _is_run(value) -> bool:
    from jupyter_llm.fitting.background import BackgroundRun
    from jupyter_llm.fitting.run import Run

    return isinstance(value, (Run, BackgroundRun))


def _finished(handle, name: str):
    """The Run a name holds: itself, or the Run a background fit ended with (refused while it runs or if it
    failed)."""
    from jupyter_llm.fitting.background import BackgroundRun

    if not isinstance(handle, BackgroundRun):
        return handle
    if handle.running:
        raise UsageError(f"--resume {name}: that background fit is still running. Stop it first ({name}.stop(), "
                         f"then {name}.wait()), or let it end ({name}.wait()).")
    if handle.error is not None or handle.result is None:
        raise UsageError(f"--resume {name}: that background fit failed ({handle.error!r}), so it has no state to "
                         "continue; resume from its checkpoint folder instead (--resume DIR).")
    return handle.result


def _resume_source(name: str, value):
    """--resume NAME where NAME is bound in the notebook: a Run (or a background fit's handle) continues from its
    state in memory; a folder of the same name makes the choice ambiguous."""
    import os

    if not _is_run(value):
        if os.path.exists(name):
            return name
        raise UsageError(f"--resume {name} names {a_or_an(type(value).__name__)} in the notebook, not a Run, and "
                         f"there is no checkpoint folder {name!r}. Pass a Run (e.g. --resume run) or a folder.")
    if os.path.exists(name):
        raise UsageError(f"--resume {name} names both a Run in the notebook and the folder {name!r}. Write the "
                         f"folder as ./{name}, or bind the Run to another name.")
    return _finished(value, name)


def _empty_body_is_the_line_magic(lines: list[str]) -> list[str]:
    """`%%train OPTIONS` with nothing under it is `%train OPTIONS` (IPython itself refuses a cell magic whose body
    is empty, before the magic is called). An IPython input transformer, run before the cell magic is read."""
    first = lines[0] if lines else ""
    if first.startswith("%%train") and first[7:8] in ("", " ", "\t", "\n") and not "".join(lines[1:]).strip():
        return ["%train" + first[7:]]
    return lines


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
    if _empty_body_is_the_line_magic not in ipython.input_transformers_cleanup:
        ipython.input_transformers_cleanup.append(_empty_body_is_the_line_magic)
    short_traceback.install()
    from flax import nnx

    ipython.push({"jl": jupyter_llm, "nnx": nnx})
    print(_LOADED_MESSAGE.format(version=jupyter_llm.__version__))


def unload(ipython) -> None:
    short_traceback.uninstall()
    if _empty_body_is_the_line_magic in ipython.input_transformers_cleanup:
        ipython.input_transformers_cleanup.remove(_empty_body_is_the_line_magic)
    magics = ipython.magics_manager.magics
    for kind in ("line", "cell"):
        magics[kind].pop("train", None)
    for name in ("lr_find", "generate", "runs"):
        magics["line"].pop(name, None)
