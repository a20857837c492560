"""The IPython layer: parse `%%train` lines, resolve names in the notebook, call `fit`, bind the results."""
