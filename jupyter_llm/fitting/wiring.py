"""What every way of running a fit wires the same: the data in the form a fit takes, and the sinks of the display and
of --logdir (only process 0 of several speaks)."""

from __future__ import annotations

from jupyter_llm.data.coerce import as_dataset
from jupyter_llm.data.text import TextCorpus
from jupyter_llm.distributed import is_main
from jupyter_llm.errors import ConfigError


def dataset_for(data, config):
    """The fit's data as a Dataset or TextCorpus (a built-in name loaded, arrays checked, --val-split carved)."""
    if isinstance(data, str):
        from jupyter_llm.datasets import load

        data = load(data)
    if isinstance(data, TextCorpus) and config.val_split:
        raise ConfigError("--val-split carves a validation split from array data; a text corpus has its validation "
                          "part already: set it with jl.datasets.text(..., val_fraction=0.1) and drop --val-split.")
    return data if isinstance(data, TextCorpus) else as_dataset(data, val_split=config.val_split, seed=config.seed)


def display_sinks(mode: str) -> list:
    if mode == "none" or not is_main():  # with several processes, process 0 speaks for all
        return []
    try:
        from jupyter_llm.sinks.select import make_display_sinks
    except ImportError:  # display package not available: plain text
        from jupyter_llm.sinks.text import TextSink

        return [TextSink()]
    return make_display_sinks(mode)


def logdir_sinks(config) -> list:
    if config.logdir is None or not is_main():
        return []
    from jupyter_llm.sinks.logdir import LogdirSink

    return [LogdirSink(config.logdir)]
