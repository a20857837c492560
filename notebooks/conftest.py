"""Notebooks run as tests (pytest --nbval-lax) in their short form: JUPYTER_LLM_SMOKE=1 asks each notebook for a
quick version of its fit (the kernels inherit this process's environment). Unset it to run the full recipes."""

import os

os.environ.setdefault("JUPYTER_LLM_SMOKE", "1")
