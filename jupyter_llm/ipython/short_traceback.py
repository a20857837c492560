"""How IPython shows a `JupyterLLMError` raised in a cell: the user's own lines and the message, not the library's.

A mistake such as `jl.datasets.text("missing.txt")` or `run.evaluate((x, y))` with labels out of range is the
user's to fix, and the 20 frames inside jupyter_llm, JAX and Orbax that lead to it only bury the message. IPython
asks an exception for `_render_traceback_()` before formatting it; `%load_ext jupyter_llm` gives `JupyterLLMError`
that method (`install`), so the error classes themselves know nothing of IPython. The exception is untouched
(`%debug` walks every frame), and `%xmode Verbose` shows the whole traceback again.
"""

from __future__ import annotations

import os
import types

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _in_library(tb: types.TracebackType) -> bool:
    return os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(_PACKAGE)


def user_frames(tb: types.TracebackType | None) -> types.TracebackType | None:
    """A copy of the traceback up to the first frame inside jupyter_llm (the call into the library)."""
    kept = []
    while tb is not None and not _in_library(tb):
        kept.append(tb)
        tb = tb.tb_next
    head = None
    for entry in reversed(kept):
        head = types.TracebackType(head, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
    return head


def render(exc: BaseException) -> list[str]:
    """IPython's structured traceback of `exc`: the user's frames, then `ErrorClass: message`, no chained causes."""
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:
        raise RuntimeError("not running under IPython")
    if shell.InteractiveTB.mode == "Verbose":
        return shell.InteractiveTB.structured_traceback(type(exc), exc, exc.__traceback__)
    cause, context, suppress = exc.__cause__, exc.__context__, exc.__suppress_context__
    exc.__cause__, exc.__context__ = None, None  # the causes are the library's business, not the user's
    try:
        return shell.InteractiveTB.structured_traceback(type(exc), exc, user_frames(exc.__traceback__))
    finally:
        exc.__cause__, exc.__context__, exc.__suppress_context__ = cause, context, suppress


def _render_traceback_(self) -> list[str]:
    """IPython's hook: the user's lines and this message, without the library's frames."""
    try:
        return render(self)
    except Exception:  # noqa: BLE001 - never let the display of an error hide the error
        import traceback

        return traceback.format_exception(type(self), self, self.__traceback__)


def install() -> None:
    from jupyter_llm.errors import JupyterLLMError

    JupyterLLMError._render_traceback_ = _render_traceback_


def uninstall() -> None:
    from jupyter_llm.errors import JupyterLLMError

    if JupyterLLMError.__dict__.get("_render_traceback_") is _render_traceback_:
        del JupyterLLMError._render_traceback_
