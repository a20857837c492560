"""Choose the display tier when a fit starts (never at import time, so one process can serve a notebook and a
terminal): widgets in a kernel with ipywidgets, HTML in a kernel without, text elsewhere.

Importing this module imports neither IPython nor ipywidgets; a plain script never imports them at all.
"""

from __future__ import annotations

import sys

from jupyter_llm.errors import ConfigError

MODES = ("auto", "widget", "html", "text", "none")


def in_kernel() -> bool:
    """True inside a Jupyter kernel (ipykernel's ZMQInteractiveShell, Colab's subclass of it), False in a script,
    a terminal IPython or an embedded shell."""
    if "IPython" not in sys.modules:  # nothing started IPython: certainly no kernel, and no import needed
        return False
    from IPython import get_ipython

    ip = get_ipython()
    if ip is None:
        return False
    if "google.colab" in sys.modules:
        return True
    if any(cls.__name__ == "ZMQInteractiveShell" for cls in type(ip).__mro__):
        return True
    try:
        return "IPKernelApp" in ip.config
    except Exception:  # a shell without a traitlets config: not a kernel
        return False


def has_ipywidgets() -> bool:
    """Asked only in a kernel (or for display='widget'), where importing it is what we are about to do anyway."""
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def choose_display(mode: str = "auto") -> str:
    """'widget', 'html', 'text' or 'none': `mode` itself unless it is 'auto'."""
    if not isinstance(mode, str) or mode.strip().lower() not in MODES:
        raise ConfigError(f"display {mode!r} is not one of: {', '.join(MODES)}. Use 'auto' to pick widgets in "
                          "a notebook and text elsewhere.")
    mode = mode.strip().lower()
    if mode != "auto":
        return mode
    if not in_kernel():
        return "text"
    return "widget" if has_ipywidgets() else "html"


def make_display_sinks(mode: str = "auto") -> list:
    """The display sinks of the chosen tier; widget and HTML tiers end the output with a static `Report`."""
    tier = choose_display(mode)
    if tier == "none":
        return []
    if tier == "text":
        from jupyter_llm.sinks.text import TextSink

        return [TextSink(live=in_kernel() or _isatty())]
    from jupyter_llm.sinks.report import ReportSink

    if tier == "html":
        from jupyter_llm.sinks.html import HTMLSink

        return [HTMLSink(), ReportSink()]
    if not has_ipywidgets():
        raise ConfigError("display='widget' needs ipywidgets: `pip install ipywidgets`, or use display='html' "
                          "(the same display without widgets).")
    from jupyter_llm.sinks.widget import WidgetSink

    return [WidgetSink(), ReportSink()]


def _isatty() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False
