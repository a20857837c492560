"""`%runs`: the table comparing this session's fits (`jl.runs()`); `%runs --clear` forgets them."""

from __future__ import annotations

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class


@magics_class
class RunsMagics(Magics):
    @line_magic
    def runs(self, line: str = ""):
        """Compare the fits of this session: the settings that differ, final metrics, curves overlaid.

        %runs           show the table
        %runs --clear   forget the recorded runs
        """
        from jupyter_llm.fitting.runlog import clear_runs, runs

        args = line.split()
        if not args:
            return runs()
        if args == ["--clear"]:
            n = clear_runs()
            print(f"Cleared {n} recorded run{'' if n == 1 else 's'}.")
            return None
        raise UsageError(f"%runs takes no arguments or --clear, got {line.strip()!r}. "
                         "Use %runs to show the table, %runs --clear to forget the runs.")
