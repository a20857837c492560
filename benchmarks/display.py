"""Workload 3: display overhead — the same jl.fit with `display="none"` and with the live display attached.

The live display is `jupyter_llm.sinks.widget.WidgetSink` when it can be built (ipywidgets installed), else
`TextSink(live=True)` writing to a StringIO. Outside a kernel the widgets have no front end, so this measures the
Python side of a redraw (formatting and trait updates), which is what runs on the training thread.
Batch 32 (the most events per second); the two fits alternate within each repeat; epochs 2..n are timed.
On a 2-core machine the wall-time ratio of two fits moves by 10-30 % between repeats, more than the 2 % target, so a
second row measures the display's own cost directly: the seconds spent inside the sink's `on` (all of the display's
work happens there, on the training thread) as a fraction of the live fit's epoch time.
"""

from __future__ import annotations

import contextlib
import io
import statistics
import time

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


class TimedSink:
    """Forwards every event to `sink` and adds up the seconds spent in it."""

    def __init__(self, sink):
        self.sink, self.seconds = sink, 0.0

    def on(self, event) -> None:
        t0 = time.perf_counter()
        self.sink.on(event)
        self.seconds += time.perf_counter() - t0


def main(argv=None):
    args = common.parse_args(__doc__.splitlines()[0], argv)
    n = common.pick(args, 2048, 60_000, 60_000)
    epochs = common.pick(args, 2, 3, 4)
    bs = 32
    x, y = mlp.make_data(n)
    plain, live, share, name = [], [], [], "?"
    for r in range(args.repeats):
        order = ("none", "live") if r % 2 == 0 else ("live", "none")
        for which in order:
            common.log(f"display: repeat {r + 1}/{args.repeats}, {which}")
            with contextlib.redirect_stdout(io.StringIO()):  # display() prints a repr outside a notebook
                if which == "none":
                    plain.append(statistics.mean(mlp.jl_fit_epochs(x, y, bs, epochs)))
                else:
                    sink, name = live_sink()
                    timed = TimedSink(sink)
                    seconds = mlp.jl_fit_epochs(x, y, bs, epochs, sinks=[timed])
                    live.append(statistics.mean(seconds))
                    share.append(timed.seconds / sum(seconds))  # all display work over epochs 2..n: an upper bound
    rows = [common.Row(f"display overhead b{bs}: {name} vs none", "s/epoch", live, plain, 'display="none"',
                       target=common.Target("ratio", "<=", 1.02),
                       note=f"{n:,} examples; epochs 2..{epochs} timed"),
            common.Row(f"display time inside {name}, share of training time", "fraction", share,
                       target=common.Target("ours", "<=", 0.02),
                       note="all of the sink's work in the live fit (compile phase included) / its timed epochs")]
    common.report(rows, args, "Display overhead")
    return rows


if __name__ == "__main__":
    main()
