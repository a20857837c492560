"""Workload 3: display overhead — the same jl.fit with `display="none"` and with the live display attached.

The live display is `jupyter_llm.sinks.widget.WidgetSink` when it can be built (ipywidgets installed), else
`TextSink(live=True)` writing to a StringIO. Outside a kernel the widgets have no front end, so this measures the
Python side of a redraw (formatting and trait updates), which is what runs on the training thread.
Batch 32 (the most events per second); the two fits alternate within each repeat; epochs 2..n are timed.
"""

from __future__ import annotations

import contextlib
import io
import statistics

import common
import mlp


def live_sink():
    """(sink, name): the widget display when available, else the live text line."""
    try:
        from jupyter_llm.sinks.widget import WidgetSink

        return WidgetSink(), "WidgetSink"
    except Exception as exc:  # noqa: BLE001 - module missing, ipywidgets missing, or not constructible here
        common.log(f"display: WidgetSink unavailable ({type(exc).__name__}: {exc}); using TextSink(live=True)")
        from jupyter_llm.sinks.text import TextSink

        return TextSink(live=True, stream=io.StringIO()), "TextSink(live)"


def main(argv=None):
    args = common.parse_args(__doc__.splitlines()[0], argv)
    n = common.pick(args, 2048, 60_000, 60_000)
    epochs = common.pick(args, 2, 3, 4)
    bs = 32
    x, y = mlp.make_data(n)
    plain, live, name = [], [], "?"
    for r in range(args.repeats):
        order = ("none", "live") if r % 2 == 0 else ("live", "none")
        for which in order:
            common.log(f"display: repeat {r + 1}/{args.repeats}, {which}")
            with contextlib.redirect_stdout(io.StringIO()):  # display() prints a repr outside a notebook
                if which == "none":
                    plain.append(statistics.mean(mlp.jl_fit_epochs(x, y, bs, epochs)))
                else:
                    sink, name = live_sink()
                    live.append(statistics.mean(mlp.jl_fit_epochs(x, y, bs, epochs, sinks=[sink])))
    rows = [common.Row(f"display overhead b{bs}: {name} vs none", "s/epoch", live, plain, 'display="none"',
                       target=common.Target("ratio", "<=", 1.02),
                       note=f"{n:,} examples; epochs 2..{epochs} timed")]
    common.report(rows, args, "Display overhead")
    return rows


if __name__ == "__main__":
    main()
