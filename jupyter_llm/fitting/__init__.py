"""The orchestration floor: a fit from checked options to a `Run`.

`orchestrate.fit` drives one fit; `prepare` checks and compiles its pieces; `resume` saves and continues fits;
`run` is what a fit leaves behind; `runlog` remembers the session's runs for `%runs`; `lr_find` is the learning-rate
range test; `build` makes a built-in model by name for the command line. Below this floor nothing knows of a fit as
a whole; above it, the magics and the command line only parse and call `fit`.
"""
