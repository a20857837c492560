"""The pure JAX part of a fit: losses, optimizers, compiled steps and the event loop. No IPython, no widgets."""
