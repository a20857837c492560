import sys

from jupyter_llm.cli import main

sys.exit(main())
