"""Error classes for mistakes a user can fix.

Every message says what was wrong and how to fix it. The magic turns any `JupyterLLMError` into an IPython
`UsageError` (one line, no traceback); raised in a cell, IPython shows only the user's lines above the message
(`ipython/short_traceback.py`); a script sees the exception itself.
"""


def a_or_an(noun: str) -> str:
    """'an int', 'a list': for messages that name the type the user passed."""
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


class JupyterLLMError(Exception):
    """Base class: a mistake in how the library was called, never a bug in the library."""

    def _render_traceback_(self) -> list[str]:
        """IPython's hook: show the user's lines and this message, without the library's frames."""
        try:
            from jupyter_llm.ipython.short_traceback import render

            return render(self)
        except Exception:  # noqa: BLE001 - never let the display of an error hide the error
            import traceback

            return traceback.format_exception(type(self), self, self.__traceback__)


class ConfigError(JupyterLLMError, ValueError):
    """An option has an unknown name or a value it cannot take."""


class DataError(JupyterLLMError, ValueError):
    """The data is malformed: wrong shapes or dtypes, empty splits, NaN inputs, labels out of range."""


class ModelError(JupyterLLMError, TypeError):
    """The model is not usable with the data (not an nnx.Module, or input shape mismatch)."""


class DatasetNotFound(JupyterLLMError, KeyError):
    """An unknown built-in dataset name, or a dataset file that cannot be read."""

    def __str__(self):  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ChecksumError(JupyterLLMError, IOError):
    """A downloaded or cached file does not match its published checksum."""
