"""Write the example notebooks from their cells and execute them, so the committed files are reports that GitHub
and nbviewer show with their results (run from the repository root: python notebooks/make_notebooks.py).

The .ipynb files are what users open; this script is their reviewable source. `--no-execute` writes the cells only;
`--only NAME` does one notebook. Execution runs the full recipes (JUPYTER_LLM_SMOKE unset) in a fresh kernel each
and keeps the widget state, so the live display's last frame and the static report are both saved. CI re-executes
the notebooks in their short form (notebooks/conftest.py); tests/test_notebook_sources.py checks that the committed
cells are what this script writes.

The install source — the repository the Colab install cell and the badges name — is one setting, the Repository URL
in pyproject.toml's [project.urls], read here and checked against the README by the same test.
"""

import argparse
import os
import pathlib
import re
import sys

import nbformat as nbf

ROOT = pathlib.Path(__file__).resolve().parent.parent


def repository() -> str:
    """'owner/name' of the GitHub repository in pyproject.toml's [project.urls] Repository."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    found = re.search(r'^Repository\s*=\s*"https://github\.com/([^"/]+/[^"/]+?)/?"', text, re.M)
    if found is None:
        sys.exit("pyproject.toml needs [project.urls] Repository = \"https://github.com/OWNER/NAME\"")
    return found.group(1)


REPO = repository()
NOTEBOOKS: dict = {}  # name -> notebook, in the order written


def badges(name: str) -> str:
    return (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"(https://colab.research.google.com/github/{REPO}/blob/main/notebooks/{name}.ipynb) "
            f"[![Binder](https://mybinder.org/badge_logo.svg)]"
            f"(https://mybinder.org/v2/gh/{REPO}/main?labpath=notebooks%2F{name}.ipynb)\n\n")


INSTALL = ("# On Colab, install the package first (JAX is already there; it is not reinstalled).\n"
           "import sys\n"
           "if \"google.colab\" in sys.modules:\n"
           f"    %pip install -q \"jupyter_llm @ git+https://github.com/{REPO}\"")


def notebook(name, cells):
    nb = nbf.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(cells):
        cell.id = f"{name}-{i:02d}"[-64:]  # stable ids: regenerating a notebook changes only what changed
    nb.cells = cells
    NOTEBOOKS[name] = nb


def execute(nb, name: str) -> None:
    """Run `nb` top to bottom in a fresh kernel from the notebooks folder, with the full recipes."""
    from nbclient import NotebookClient

    env = {k: v for k, v in os.environ.items() if k != "JUPYTER_LLM_SMOKE"}
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        NotebookClient(nb, timeout=3600, kernel_name="python3", record_timing=False, store_widget_state=True,
                       resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-execute", action="store_true", help="write the cells without running them")
    parser.add_argument("--only", action="append", help="only this notebook (repeatable)")
    args = parser.parse_args(argv)
    for name, nb in NOTEBOOKS.items():
        if args.only and name not in args.only:
            continue
        if not args.no_execute:
            print(f"executing {name} ...", flush=True)
            execute(nb, name)
        nbf.write(nb, ROOT / "notebooks" / f"{name}.ipynb")
        print(f"wrote notebooks/{name}.ipynb")


md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell


def parameters(source):
    cell = code(source)
    cell.metadata["tags"] = ["parameters"]
    return cell


notebook("char_gpt", [
    md(badges("char_gpt") + "# A character-level GPT on Shakespeare, in one cell\n\n"
       "nanoGPT's CPU recipe: 4 layers, 4 heads, 128-wide embeddings, a context of 64 characters, batch 12, AdamW at "
       "1e-3 with 100 warm-up steps and cosine decay to 1e-4, no dropout, 2,000 iterations — about 0.8 M parameters. "
       "It reaches a validation loss of about 1.90 nats per character (1.895–1.911 over five seeds; nanoGPT's own "
       "code, 1.891–1.908). nanoGPT's README says 1.88: that is the estimate its train.py prints from 20 random "
       "validation batches, which varies by about ±0.015 — at its seed 1337 it prints 1.886 here, for a model whose "
       "loss over the whole validation text is 1.898. Then it writes Shakespeare-like text."),
    code(INSTALL),
    code("%load_ext jupyter_llm"),
    md("The size of the run: the full recipe by default; the test suite sets `JUPYTER_LLM_SMOKE=1` for a short "
       "version (papermill can also set `steps`)."),
    parameters("import os\n\n"
               "steps = 150 if os.environ.get(\"JUPYTER_LLM_SMOKE\") else 2000\n"
               "eval_every = max(steps // 8, 1)\n"
               "sample_every = max(steps // 4, 1)"),
    md("The corpus: tiny-shakespeare (1.1 M characters), downloaded once and checksum-verified — or the copy that "
       "ships with this repository. Characters are the tokens; the last 10 % is held out for validation."),
    code("local = \"data/tinyshakespeare.txt\"\n"
         "corpus = jl.datasets.load(\"tinyshakespeare\", path=local if os.path.exists(local) else None, "
         "block_size=64)\n"
         "corpus"),
    md("One cell trains it. Throughput is shown in tokens per second; each evaluation runs over the whole "
       "validation text, and every `sample_every` steps the display shows what the model writes so far."),
    code("%%train --data corpus --steps $steps --eval-every $eval_every --batch-size 12 --optimizer adamw --lr 1e-3 "
         "--beta2 0.99 --weight-decay 0.1 --schedule cosine --warmup 100 --min-lr 1e-4 --clip 1.0 --seed 0 "
         "--sample-every $sample_every\n"
         "model = jl.models.GPT.from_preset(\"gpt-char-tiny\", vocab_size=corpus.vocab_size, rngs=nnx.Rngs(0))"),
    code("val = run.history[\"val_loss\"][-1]\n"
         "print(f\"validation loss {val:.3f} nats/char ({run.history['val_bits_per_token'][-1]:.2f} bits), \"\n"
         "      f\"perplexity {run.history['val_perplexity'][-1]:.2f}\")\n"
         "assert val < run.history[\"val_loss\"][0]\n"
         "if steps >= 2000:\n"
         "    print(f\"nanoGPT's train.py prints 1.886 for this recipe at its seed (20 random batches, standard \"\n"
         "          f\"deviation about 0.015) for a model whose loss over every validation window is 1.898; this run, \"\n"
         "          f\"over the whole validation text: {val:.3f}\")\n"
         "    assert val < 1.95, val  # a regression guard (measured here: 1.898 and 1.910)"),
    md("Sample from it. Decoding is compiled once, with a fixed-size key/value cache; the text streams into the "
       "cell as it is produced."),
    code("%generate --tokens 500 --temperature 0.8 --seed 0 ROMEO:"),
    code("print(run.generate(\"JULIET:\", 200, temperature=0.8, top_k=20, seed=1))"),
])


notebook("quickstart", [
    md(
        badges("quickstart") +
        "# Quick start: an MLP on handwritten digits in one cell\n\n"
        "The first example of every course — a multi-layer perceptron with one hidden layer of 128 ReLU units and a "
        "10-way softmax, trained with Adam (learning rate 1e-3, batch 32) and 20 % of the training set held out for "
        "validation — on the 8×8 digits that ship with the package (1,797 images, so nothing is downloaded)."),
    code(INSTALL),
    code("%load_ext jupyter_llm"),
    md(
        "One `%%train` cell: its body is ordinary Python that defines `model` and `data`; the options on the first "
        "line configure the fit (`%%train?` lists them all). The train and evaluation steps are compiled with XLA; "
        "afterwards `model` holds the trained weights and `run` the history."),
    code(
        "%%train --epochs 20 --batch-size 32 --lr 1e-3 --val-split 0.2 --seed 0\n"
        "model = jl.models.MLP(in_features=64, hidden=[128], num_classes=10, activation=\"relu\", rngs=nnx.Rngs(0))\n"
        "data = jl.datasets.load(\"digits\")"),
    md("## Evaluate on the held-out test split"),
    code(
        "test = run.evaluate(\"test\")\n"
        "print(f\"test accuracy {test['accuracy']:.3f}, test loss {test['loss']:.3f}\")\n"
        "assert test[\"accuracy\"] >= 0.95, test  # the notebook doubles as a test"),
    md("## The history: loss falls, accuracy rises"),
    code(
        "import matplotlib.pyplot as plt\n\n"
        "h = run.history\n"
        "fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3))\n"
        "ax1.plot(h[\"loss\"], label=\"train\"); ax1.plot(h[\"val_loss\"], label=\"validation\")\n"
        "ax1.set_xlabel(\"epoch\"); ax1.set_ylabel(\"loss\"); ax1.legend()\n"
        "ax2.plot(h[\"accuracy\"], label=\"train\"); ax2.plot(h[\"val_accuracy\"], label=\"validation\")\n"
        "ax2.set_xlabel(\"epoch\"); ax2.set_ylabel(\"accuracy\"); ax2.legend()\n"
        "plt.tight_layout()\n"
        "assert h[\"loss\"][-1] < h[\"loss\"][0] / 4"),
    md("## Predictions of the trained model"),
    code(
        "import numpy as np\n\n"
        "x_test, y_test = data.test\n"
        "predicted = run.predict(x_test[:10]).argmax(axis=1)\n"
        "print(\"predicted:\", predicted)\n"
        "print(\"true:     \", y_test[:10])"),
])


notebook("training_troubles", [
    md(badges("training_troubles") + "# Training troubles and their remedies\n\n"
       "Each classic trouble, shown on a real fit and fixed with one option of `%%train`: vanishing gradients, "
       "exploding gradients, overfitting (of an MLP, then of a CNN on images: data augmentation), and a learning "
       "rate picked by a range test. Data: the embedded 8×8 digits."),
    code(INSTALL),
    code("%load_ext jupyter_llm"),
    parameters("import os\n\nepochs = 6 if os.environ.get(\"JUPYTER_LLM_SMOKE\") else 30"),
    code("data = jl.datasets.load(\"digits\")\n"
         "def deep_mlp(activation, depth=8, width=64, dropout=0.0, seed=0):\n"
         "    return jl.models.MLP(in_features=64, hidden=[width] * depth, num_classes=10, activation=activation,\n"
         "                         dropout=dropout, rngs=nnx.Rngs(seed))"),
    md("## 1. Vanishing gradients: a deep sigmoid network barely learns\n\n"
       "Eight sigmoid layers shrink the gradient at every layer (the sigmoid's slope is at most 1/4), so the first "
       "layers hardly move; the same network with ReLU trains. The history's `grad_norm` is the global gradient "
       "norm, computed inside the compiled step; below, the gradient of each layer shows where it vanishes."),
    code("%%train --epochs $epochs --lr 0.1 --optimizer sgd --val-split 0.2 --out sigmoid_run\n"
         "model = deep_mlp(\"sigmoid\")"),
    code("%%train --epochs $epochs --lr 0.1 --optimizer sgd --val-split 0.2 --out relu_run\n"
         "model = deep_mlp(\"relu\")"),
    code("import jax.numpy as jnp\n"
         "import optax\n\n"
         "def layer_gradient_norms(model, x, y):\n"
         "    \"\"\"Norm of the loss gradient for each layer's weight matrix, input layer first.\"\"\"\n"
         "    def loss(m):\n"
         "        return optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()\n"
         "    grads = nnx.grad(loss)(model)\n"
         "    layers = [grads[\"hidden\"][i][\"kernel\"] for i in range(len(model.hidden))] + [grads[\"out\"][\"kernel\"]]\n"
         "    return [float(jnp.linalg.norm(k[...])) for k in layers]\n\n"
         "x, y = data.train\n"
         "for name, r in [(\"sigmoid\", sigmoid_run), (\"relu\", relu_run)]:\n"
         "    norms = layer_gradient_norms(r.model, jnp.asarray(x[:512]), jnp.asarray(y[:512]))\n"
         "    print(f\"{name:8s} loss {r.history['loss'][-1]:.3f}  layer gradients: \" + \" \".join(f\"{n:.0e}\" for n in norms))\n"
         "sig = layer_gradient_norms(sigmoid_run.model, jnp.asarray(x[:512]), jnp.asarray(y[:512]))\n"
         "rel = layer_gradient_norms(relu_run.model, jnp.asarray(x[:512]), jnp.asarray(y[:512]))\n"
         "assert sig[0] < 1e-3 * sig[-1]      # vanished: the first layer gets a thousandth of the last one's gradient\n"
         "assert rel[0] > 0.1 * rel[-1]       # ReLU keeps it alive\n"
         "assert relu_run.history[\"loss\"][-1] < sigmoid_run.history[\"loss\"][-1]"),
    md("## 2. Exploding gradients: a large learning rate diverges; clipping tames it\n\n"
       "With plain SGD at a learning rate of 3 on a deep ReLU network the first updates are far too large and the "
       "fit diverges, in one of two ways: the loss overflows — the fit notices the non-finite loss inside the "
       "step, stops, and keeps the last finite weights — or every ReLU dies and the network is left at chance. "
       "Which one depends on the seed. Clipping the gradient's global norm to 0.1 bounds every step, and the same "
       "learning rate trains."),
    code("%%train --epochs $epochs --lr 3.0 --optimizer sgd --val-split 0.2 --out exploding_run\n"
         "model = deep_mlp(\"relu\", width=256)"),
    code("%%train --epochs $epochs --lr 3.0 --optimizer sgd --clip 0.1 --val-split 0.2 --out clipped_run\n"
         "model = deep_mlp(\"relu\", width=256)"),
    code("exploded = exploding_run.history.get(\"val_accuracy\", [float(\"nan\")])[-1]  # nan: stopped before any evaluation\n"
         "clipped = clipped_run.history[\"val_accuracy\"][-1]\n"
         "print(f\"no clipping: {exploding_run.reason}, val accuracy {exploded:.3f}; \"\n"
         "      f\"clipped: {clipped_run.reason}, val accuracy {clipped:.3f}\")\n"
         "assert exploding_run.reason == \"nan\" or exploded < 0.2  # diverged: a non-finite loss, or dead at chance\n"
         "assert clipped > 0.8"),
    md("## 3. Overfitting: dropout, weight decay and early stopping\n\n"
       "Trained on only 150 examples, a wide network memorises them: training loss keeps falling while validation "
       "loss turns back up. Dropout and decoupled weight decay slow that down; early stopping on `val_loss` with "
       "`--keep-best` ends the fit and restores the weights of its best evaluation."),
    code("x, y = data.train\n"
         "small = {\"train\": (x[:150], y[:150]), \"validation\": (x[1000:], y[1000:]), \"test\": data.test}"),
    code("%%train --data small --epochs 200 --lr 3e-3 --batch-size 16 --out overfit_run\n"
         "model = jl.models.MLP(in_features=64, hidden=[512, 512], num_classes=10, rngs=nnx.Rngs(0))"),
    code("%%train --data small --epochs 200 --lr 3e-3 --batch-size 16 --optimizer adamw --weight-decay 0.05 "
         "--early-stop 10 --keep-best --out regular_run\n"
         "model = jl.models.MLP(in_features=64, hidden=[512, 512], num_classes=10, dropout=0.5, rngs=nnx.Rngs(0))"),
    code("import numpy as np\n"
         "for name, r in [(\"plain\", overfit_run), (\"dropout + wd + early stop\", regular_run)]:\n"
         "    v = r.history[\"val_loss\"]\n"
         "    print(f\"{name:28s} epochs {len(v):3d}  best val_loss {min(v):.3f}  final val_loss {v[-1]:.3f}  \"\n"
         "          f\"test accuracy {r.evaluate('test')['accuracy']:.3f}\")\n"
         "v = overfit_run.history[\"val_loss\"]\n"
         "assert v[-1] > 1.2 * min(v)  # the plain fit overfits: validation loss rose again\n"
         "assert regular_run.reason == \"early-stopped\"\n"
         "assert regular_run.evaluate(\"validation\")[\"loss\"] <= min(overfit_run.history[\"val_loss\"]) * 1.1"),
    md("## 4. Overfitting of images: data augmentation\n\n"
       "In real pictures a digit rarely sits at the same place. Below, each digit is put at a random position on a "
       "12×12 canvas and a small CNN trains on 300 of them: it fits every training image but misses about a "
       "quarter of the held-out ones, having seen each digit at few positions. `--augment shift` moves each "
       "training image by up to an eighth of its side (2 pixels here), anew at every step, so the network sees "
       "each digit at many positions. The shifts are computed on the device inside the compiled step, from "
       "`--seed` and the step number (a resumed fit draws the same ones), and never at evaluation. `flip` would "
       "mirror digits into other shapes, so it is not used here; `rotate` and `noise` are the other choices."),
    code("rng = np.random.default_rng(0)\n"
         "x, y = data.train\n"
         "canvas = np.zeros((len(x), 12, 12, 1), np.float32)\n"
         "for i, (r, c) in enumerate(rng.integers(0, 5, (len(x), 2))):  # a random place for each digit\n"
         "    canvas[i, r:r + 8, c:c + 8] = x[i]\n"
         "wandering = {\"train\": (canvas[:300], y[:300]), \"validation\": (canvas[300:], y[300:])}"),
    code("%%train --data wandering --epochs 60 --lr 3e-3 --out still_run\n"
         "model = jl.models.CNN(channels=(16, 32), hidden=64, rngs=nnx.Rngs(0))"),
    code("%%train --data wandering --epochs 60 --lr 3e-3 --augment shift --out shifted_run\n"
         "model = jl.models.CNN(channels=(16, 32), hidden=64, rngs=nnx.Rngs(0))"),
    code("gaps = {}\n"
         "for name, r in [(\"no augmentation\", still_run), (\"--augment shift\", shifted_run)]:\n"
         "    train = r.evaluate(\"train\")[\"accuracy\"]  # the training images as they are, not shifted\n"
         "    val = r.history[\"val_accuracy\"][-1]\n"
         "    gaps[name] = train - val\n"
         "    print(f\"{name:16s} train accuracy {train:.3f}  validation accuracy {val:.3f}  gap {train - val:.3f}\")\n"
         "assert gaps[\"no augmentation\"] > 0.15\n"
         "assert gaps[\"--augment shift\"] < gaps[\"no augmentation\"] - 0.05"),
    md("## 5. Picking a learning rate: the range test\n\n"
       "`%lr_find` sweeps the learning rate exponentially over a short fit, records the loss at every step, and "
       "suggests the rate where the loss falls fastest. The model's weights are left exactly as they were."),
    code("model = jl.models.MLP(in_features=64, hidden=[128], num_classes=10, rngs=nnx.Rngs(0))\n"
         "%lr_find --data data --steps 100"),
    code("import matplotlib.pyplot as plt\n"
         "lr_finder.plot()\n"
         "plt.show()\n"
         "assert 1e-5 < lr_finder.suggestion < 1"),
    md("## All the runs of this notebook, side by side"),
    code("jl.runs()"),
])


notebook("sentiment", [
    md(badges("sentiment") + "# Sentiment: a small transformer text classifier\n\n"
       "3,000 one-sentence reviews from Amazon, IMDb and Yelp, each labelled positive or negative (the UCI "
       "*Sentiment Labelled Sentences* set, Kotzias et al., KDD 2015; CC BY 4.0). Words are the tokens; the "
       "model is a two-layer bidirectional transformer encoder with mean pooling."),
    code(INSTALL),
    code("%load_ext jupyter_llm"),
    parameters("import os\n\nepochs = 4 if os.environ.get(\"JUPYTER_LLM_SMOKE\") else 20"),
    md("The shipped copy is used when it is there; otherwise the loader downloads the set once and verifies "
       "each file's checksum. Splits are stratified by source and label: 2,100 / 300 / 600."),
    code("local = \"data/sentiment_labelled\"\n"
         "data = jl.datasets.load(\"sentiment\", path=local if os.path.isdir(local) else None, max_len=48)\n"
         "data"),
    code("%%train --epochs $epochs --batch-size 32 --lr 1e-3 --optimizer adamw --weight-decay 0.01 "
         "--early-stop 4 --keep-best --seed 0\n"
         "model = jl.models.TextClassifier(vocab_size=data.meta[\"vocab_size\"], num_classes=2,\n"
         "                                 block_size=data.meta[\"max_len\"], n_layer=2, n_head=4, n_embd=64,\n"
         "                                 dropout=0.2, rngs=nnx.Rngs(0))"),
    md("## Accuracy and confusion matrix on the test split"),
    code("import numpy as np\n\n"
         "x_test, y_test = data.test\n"
         "pred = run.predict(x_test).argmax(axis=1)\n"
         "accuracy = float((pred == y_test).mean())\n"
         "confusion = np.zeros((2, 2), int)\n"
         "np.add.at(confusion, (y_test, pred), 1)\n"
         "print(f\"test accuracy {accuracy:.3f}\")\n"
         "print(\"confusion matrix (rows: true, columns: predicted):\")\n"
         "for name, row in zip(data.class_names, confusion):\n"
         "    print(f\"  {name:>8}: {row}\")\n"
         "assert abs(accuracy - run.evaluate(\"test\")[\"accuracy\"]) < 1e-6  # the Run and the model agree\n"
         "assert accuracy >= (0.65 if os.environ.get(\"JUPYTER_LLM_SMOKE\") else 0.75)"),
    code("import matplotlib.pyplot as plt\n\n"
         "fig, ax = plt.subplots(figsize=(3.2, 3))\n"
         "ax.imshow(confusion, cmap=\"Blues\")\n"
         "ax.set_xticks([0, 1], data.class_names); ax.set_yticks([0, 1], data.class_names)\n"
         "ax.set_xlabel(\"predicted\"); ax.set_ylabel(\"true\")\n"
         "for (i, j), n in np.ndenumerate(confusion):\n"
         "    ax.text(j, i, n, ha=\"center\", va=\"center\")\n"
         "plt.show()"),
    md("## New sentences"),
    md("`run.classify` encodes new texts with the fit's tokenizer and names each one's class, with the model's "
       "probability of it (`run.predict(x, probabilities=True)` gives every class's)."),
    code("sentences = [\"The battery died after two days, a total waste of money.\",\n"
         "             \"Friendly staff and the best pizza in town!\",\n"
         "             \"I would not recommend this film to anyone.\"]\n"
         "for s, p in zip(sentences, run.classify(sentences)):\n"
         "    print(f\"{p.label:>8} ({p.probability:.2f})  {s}\")"),
])


notebook("scaling", [
    md(badges("scaling") + "# One GPT, one device or eight: sharding from a cell\n\n"
       "`--mesh` lays the devices out on three axes: `data` splits each batch, `fsdp` splits it too and shards the "
       "parameters and optimizer state, `model` splits the layers (tensor parallel: attention heads and MLP columns). "
       "The same small GPT trains on one device and on a 2 x 2 x 2 mesh; the losses agree, and each device holds an "
       "eighth of most weights. Without accelerators, the CPU stands in for 8 devices."),
    code(INSTALL),
    code("import jupyter_llm as jl\n\n"
         "jl.distributed.simulate_cpu_devices(8)  # before JAX starts; on a machine with accelerators, use those\n"
         "%load_ext jupyter_llm"),
    parameters("import os\n\nsteps = 40 if os.environ.get(\"JUPYTER_LLM_SMOKE\") else 600"),
    code("local = \"data/tinyshakespeare.txt\"\n"
         "corpus = jl.datasets.load(\"tinyshakespeare\", path=local if os.path.exists(local) else None, "
         "block_size=64)\n"
         "import jax\n"
         "jax.devices()"),
    md("On one device (a mesh of one):"),
    code("%%train --data corpus --steps $steps --eval-every 20 --eval-batches 8 --batch-size 16 --lr 3e-3 --seed 0 "
         "--mesh data=1 --out one\n"
         "model = jl.models.GPT(vocab_size=corpus.vocab_size, block_size=64, n_layer=2, n_head=4, n_embd=64, "
         "dropout=0.0, rngs=nnx.Rngs(0))"),
    md("On eight: the batch split over `data` x `fsdp`, the weights over `fsdp` x `model`:"),
    code("%%train --data corpus --steps $steps --eval-every 20 --eval-batches 8 --batch-size 16 --lr 3e-3 --seed 0 "
         "--mesh data=2,fsdp=2,model=2 --out sharded\n"
         "model = jl.models.GPT(vocab_size=corpus.vocab_size, block_size=64, n_layer=2, n_head=4, n_embd=64, "
         "dropout=0.0, rngs=nnx.Rngs(0))"),
    md("The same fit, up to the order of float sums; memory per device from the layout and XLA's analysis of the "
       "compiled step:"),
    code("import numpy as np\n\n"
         "np.testing.assert_allclose(sharded.history[\"val_loss\"], one.history[\"val_loss\"], rtol=1e-3)\n"
         "print(f\"{'bytes per device':<18}{'1 device':>12}{'2x2x2 mesh':>12}\")\n"
         "for part in one.memory:\n"
         "    print(f\"{part:<18}{one.memory[part]:>12,}{sharded.memory[part]:>12,}\")\n"
         "assert sharded.memory[\"parameters\"] < one.memory[\"parameters\"] / 3"),
    code("w = model.h[0].attn.c_attn.kernel.get_value()  # (64, 192): rows over fsdp, columns (heads) over model\n"
         "print(w.sharding.spec, sorted({s.data.shape for s in w.addressable_shards}))"),
    code("%generate --tokens 120 --temperature 0.8 --run sharded ROMEO:"),
])


notebook("finetune_gpt2", [
    md(badges("finetune_gpt2") + "# Teach GPT-2 to follow instructions, with LoRA\n\n"
       "Fifty questions with short answers in one JSON Lines file, GPT-2 (124 M parameters) and a `%%train --lora 8` "
       "cell: only low-rank adapters train (about 1.2 M numbers), the loss counts the answers' tokens and not the "
       "questions', and every answer ends with GPT-2's `<|endoftext|>`, so the model learns where to stop. Then "
       "it answers questions it never saw, and the fine-tuned model is saved in Hugging Face's format."),
    code(INSTALL),
    code("%load_ext jupyter_llm"),
    md("The model: GPT-2 by name, downloaded once (548 MB, checked against its SHA-256). The test suite sets "
       "`JUPYTER_LLM_SMOKE=1`; then a tiny GPT-2 built in this notebook stands in for it, so the test never "
       "touches the network."),
    parameters("import os\n\n"
               "smoke = bool(os.environ.get(\"JUPYTER_LLM_SMOKE\"))\n"
               "checkpoint = \"gpt2\"\n"
               "epochs = 20 if smoke else 10\n"
               "lr = 1e-2 if smoke else 1e-3"),
    md("The data: one object per line with a `prompt` and a `response` (the copy in this repository, or fetched "
       "from it on Colab)."),
    code("local = \"data/instructions.jsonl\"\n"
         "if not os.path.exists(local):\n"
         "    import urllib.request\n\n"
         "    os.makedirs(\"data\", exist_ok=True)\n"
         f"    url = \"https://raw.githubusercontent.com/{REPO}/main/notebooks/\" + local\n"
         "    urllib.request.urlretrieve(url, local)\n"
         "print(\"\".join(open(local).readlines()[:3]))"),
    md("Only under test: the stand-in. A byte-level BPE with `<|endoftext|>`, trained on some Shakespeare and the "
       "questions; a 2-layer GPT pretrained on that Shakespeare for 200 steps; both saved as GPT-2 is published "
       "(`config.json`, `model.safetensors`, `tokenizer.json`), so what follows reads it as it reads GPT-2."),
    code("if smoke:\n"
         "    import tempfile\n"
         "    from jupyter_llm.data.tokenizers import BPETokenizer\n\n"
         "    text = open(\"data/tinyshakespeare.txt\").read()[:200_000]\n"
         "    bpe = BPETokenizer.train(text + open(local).read(), 512, end_token=True)\n"
         "    tiny = jl.models.GPT(vocab_size=bpe.vocab_size, block_size=64, n_layer=2, n_head=2, n_embd=64,\n"
         "                         rngs=nnx.Rngs(0))\n"
         "    jl.fit(tiny, jl.datasets.text(text, tokenizer=bpe, block_size=64), steps=200, batch_size=16, lr=3e-3,\n"
         "           display=\"none\")\n"
         "    checkpoint = tiny.save_pretrained(tempfile.mkdtemp(prefix=\"tiny-gpt2-\"), tokenizer=bpe)"),
    md("Each example becomes `template(prompt) + response + <|endoftext|>` in GPT-2's tokens. The targets of the "
       "prompt's tokens are -1: the loss leaves them out. `packing=False` gives each example a row of its own, "
       "starting at position 0 as a prompt does when you generate (the default, packing, fills rows with several "
       "examples: less padding on a large set). The last tenth of the examples is held out for validation."),
    code("data = jl.datasets.instructions(local, tokenizer=checkpoint, packing=False)\n"
         "tok, (x, y) = data.meta[\"tokenizer\"], data.train\n"
         "first = int((y[0] >= 0).argmax())  # the first position with a target: the prompt's last token\n"
         "print(data.description)\n"
         "print(\"prompt, no loss:\", repr(tok.decode(x[0][:first + 1])))\n"
         "print(\"targets, loss:  \", repr(tok.decode(y[0][y[0] >= 0])))"),
    md("Fine-tune: rank-8 adapters on every linear layer of the blocks; GPT-2's own weights stay frozen."),
    code("%%train --lora 8 --epochs $epochs --batch-size 8 --lr $lr --seed 0\n"
         "model = jl.models.GPT.from_pretrained(checkpoint)"),
    code("h = run.history\n"
         "print(f\"validation loss on the answers: {h['val_loss'][0]:.2f} after the first epoch, \"\n"
         "      f\"{h['val_loss'][-1]:.2f} at the end; next-token accuracy {h['val_accuracy'][-1]:.0%}\")\n"
         "assert h[\"val_loss\"][-1] < h[\"val_loss\"][0]\n"
         "if smoke:\n"
         "    assert h[\"val_loss\"][-1] < 4.1, h[\"val_loss\"]  # the stand-in, measured: 4.35 -> 3.73"),
    md("Ask in the template's words (`data.meta[\"template\"]`); greedy decoding (`--temperature 0`). IPython "
       "puts the question into the line where it says `{question}`."),
    code("question = data.meta[\"template\"].replace(\"{prompt}\", \"What is the opposite of fast?\")"),
    code("%generate --tokens 12 --temperature 0 \"{question}\""),
    md("Generation stops at `<|endoftext|>` (`stop_at_end=True`, the default), as `transformers` stops at its "
       "end-of-sequence token."),
    code("for q in [\"What is the plural of goose?\", \"What colour is milk?\", \"What sound does a lion make?\",\n"
         "          \"What is the capital of Chile?\"]:\n"
         "    answer = run.generate(data.meta[\"template\"].replace(\"{prompt}\", q), 16, temperature=0)\n"
         "    print(f\"{q:32} {answer}\")"),
    md("Save the fine-tuned model (adapters merged into the weights) with its tokenizer, in the format "
       "`transformers` and `GPT.from_pretrained` read, and load it back."),
    code("import numpy as np\n"
         "import tempfile\n\n"
         "folder = run.save_pretrained(os.path.join(tempfile.mkdtemp(), \"gpt2-instructions\") if smoke\n"
         "                             else \"gpt2-instructions\")\n"
         "print(sorted(p.name for p in folder.iterdir()))\n"
         "tuned = jl.models.GPT.from_pretrained(folder)\n"
         "ids = tok.encode(question)[None]\n"
         "np.testing.assert_allclose(tuned(ids), run.model(ids), atol=1e-4)  # the merged model is the adapted one"),
])


if __name__ == "__main__":
    main()
