"""The live display's Pause / Stop buttons and learning-rate / clip boxes, calling the same methods as a cell does.

Their callbacks only call the background handle's methods, which set events for the worker (fitting/control.py):
nothing heavy runs on the kernel's main thread. A foreground fit gets a line instead: while its cell runs, ipykernel
7.4 delivers no widget message (a click would arrive after the fit), so the buttons come with `--background`.
"""

from __future__ import annotations

FOREGROUND_NOTE = ("<span style='color:#777;font-size:90%'>The notebook's interrupt (■) stops this fit; Pause / Stop "
                   "buttons and a learning-rate control come with <code>%%train --background</code> "
                   "(<code>jl.fit(..., background=True)</code>): a running cell receives no clicks.</span>")


def control_bar(run):
    """An HBox steering `run` (a BackgroundRun): Pause/Resume, Stop, lr and (with --clip) clip boxes."""
    import ipywidgets as w

    pause = w.Button(description="Pause", icon="pause", layout=w.Layout(width="auto"))
    stop = w.Button(description="Stop", icon="stop", button_style="danger", layout=w.Layout(width="auto"))
    status = w.Label()

    def on_pause(_):
        if run.paused:
            run.unpause()
            pause.description, pause.icon = "Pause", "pause"
        else:
            run.pause()
            pause.description, pause.icon = "Resume", "play"

    def on_stop(_):
        run.stop()
        pause.disabled = stop.disabled = True
        status.value = "stopping at the next step boundary"

    pause.on_click(on_pause)
    stop.on_click(on_stop)
    parts = [pause, stop]
    config = run.config
    if isinstance(config.optimizer, str):
        parts.append(_number_box(w, "lr", float(config.lr), run, status))
    if config.clip is not None:
        parts.append(_number_box(w, "clip", float(config.clip), run, status))
    box = w.HBox([*parts, status])
    box.pause_button, box.stop_button = pause, stop  # for tests and the display's end
    return box


def _number_box(w, name: str, value: float, run, status):
    box = w.FloatText(value=value, description=name, continuous_update=False, layout=w.Layout(width="170px"),
                      style={"description_width": "initial"})

    def changed(change):
        try:
            run.set(**{name: change["new"]})
            status.value = f"{name} → {change['new']:g} from the next step"
        except Exception as exc:  # the same message a cell would get
            status.value = str(exc)

    box.observe(changed, names="value")
    return box
