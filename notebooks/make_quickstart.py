"""Write notebooks/quickstart.ipynb (run from the repository root) (the source of truth for its cells; outputs come from executing it)."""

import nbformat as nbf

REPO = "jupyter-llm/jupyter_llm"
nb = nbf.v4.new_notebook()
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nb.cells = [
    nbf.v4.new_markdown_cell(
        f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
        f"(https://colab.research.google.com/github/{REPO}/blob/main/notebooks/quickstart.ipynb) "
        f"[![Binder](https://mybinder.org/badge_logo.svg)]"
        f"(https://mybinder.org/v2/gh/{REPO}/main?labpath=notebooks%2Fquickstart.ipynb)\n\n"
        "# Quick start: an MLP on handwritten digits in one cell\n\n"
        "The first example of every course — a multi-layer perceptron with one hidden layer of 128 ReLU units and a "
        "10-way softmax, trained with Adam (learning rate 1e-3, batch 32) and 20 % of the training set held out for "
        "validation — on the 8×8 digits that ship with the package (1,797 images, so nothing is downloaded)."),
    nbf.v4.new_code_cell(
        "# On Colab, install the package first (JAX is already there; it is not reinstalled).\n"
        "import sys\n"
        "if \"google.colab\" in sys.modules:\n"
        f"    %pip install -q \"jupyter_llm @ git+https://github.com/{REPO}\""),
    nbf.v4.new_code_cell("%load_ext jupyter_llm"),
    nbf.v4.new_markdown_cell(
        "One `%%train` cell: its body is ordinary Python that defines `model` and `data`; the options on the first "
        "line configure the fit (`%%train?` lists them all). The train and evaluation steps are compiled with XLA; "
        "afterwards `model` holds the trained weights and `run` the history."),
    nbf.v4.new_code_cell(
        "%%train --epochs 20 --batch-size 32 --lr 1e-3 --val-split 0.2 --seed 0\n"
        "model = jl.models.MLP(in_features=64, hidden=[128], num_classes=10, activation=\"relu\", rngs=nnx.Rngs(0))\n"
        "data = jl.datasets.load(\"digits\")"),
    nbf.v4.new_markdown_cell("## Evaluate on the held-out test split"),
    nbf.v4.new_code_cell(
        "test = run.evaluate(\"test\")\n"
        "print(f\"test accuracy {test['accuracy']:.3f}, test loss {test['loss']:.3f}\")\n"
        "assert test[\"accuracy\"] >= 0.95, test  # the notebook doubles as a test"),
    nbf.v4.new_markdown_cell("## The history: loss falls, accuracy rises"),
    nbf.v4.new_code_cell(
        "import matplotlib.pyplot as plt\n\n"
        "h = run.history\n"
        "fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3))\n"
        "ax1.plot(h[\"loss\"], label=\"train\"); ax1.plot(h[\"val_loss\"], label=\"validation\")\n"
        "ax1.set_xlabel(\"epoch\"); ax1.set_ylabel(\"loss\"); ax1.legend()\n"
        "ax2.plot(h[\"accuracy\"], label=\"train\"); ax2.plot(h[\"val_accuracy\"], label=\"validation\")\n"
        "ax2.set_xlabel(\"epoch\"); ax2.set_ylabel(\"accuracy\"); ax2.legend()\n"
        "plt.tight_layout()\n"
        "assert h[\"loss\"][-1] < h[\"loss\"][0] / 4"),
    nbf.v4.new_markdown_cell("## Predictions of the trained model"),
    nbf.v4.new_code_cell(
        "import numpy as np\n\n"
        "x_test, y_test = data.test\n"
        "predicted = run.predict(x_test[:10]).argmax(axis=1)\n"
        "print(\"predicted:\", predicted)\n"
        "print(\"true:     \", y_test[:10])"),
]
nbf.write(nb, "notebooks/quickstart.ipynb")
print("wrote notebooks/quickstart.ipynb")
