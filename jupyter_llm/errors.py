"""Error classes for mistakes a user can fix.

Every message says what was wrong and how to fix it. The magic turns any `JupyterLLMError` into an IPython
`UsageError` (one line, no traceback); raised in a cell of a notebook with the extension loaded, IPython shows only
the user's lines above the message (`ipython/short_traceback.py` adds that hook); a script sees the exception itself.
"""


def a_or_an(noun: str) -> str:
    """'an int', 'a list': for messages that name the type the user passed."""
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


class JupyterLLMError(Exception):
    """Base class: a mistake in how the library was called, never a bug in the library."""


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


class PretrainedError(JupyterLLMError, ValueError):
    """A pretrained model or tokenizer cannot be read: a missing folder or file, a config that is not GPT-2's, weights
    that do not fit their config, or a named checkpoint whose checksums this version does not pin."""
