"""The char GPT's validation loss at 2,000 iterations over several seeds: jl.fit and the PyTorch reference, same recipe.

One run's loss moves by about 0.01 with the seed (initialisation and batch order), as much as the gap between
nanoGPT's published 1.88 and what either implementation reaches here, so a single figure cannot say whether a
recipe matches. Each seed trains both from scratch (`gpt.jl_fit`'s recipe and `gpt_torch.py --val-at`) and scores
them on every window of the validation text and on the same 240 random windows drawn at the seed
(`gpt_torch.eval_windows`, 20 batches). Not part of `run.py`: full mode (5 seeds) took 35 minutes on 2 cores,
quick mode (3 seeds) takes about 20 (figures from the previous PyTorch reference).
"""

from __future__ import annotations

import common
import gpt
import gpt_torch


def main(argv=None):
    import os

    args = common.parse_args(__doc__.splitlines()[0], argv, extra=lambda p: p.add_argument(
        "--torch-threads", type=int, default=os.cpu_count(), help="torch.set_num_threads for the reference"))
    seeds = [gpt_torch.SEED, 0, 1, 2, 3][:common.pick(args, 1, 3, 5)]  # the recipe's seed first
    iters = common.pick(args, 20, 2000, 2000)
    cfg = gpt_torch.TINY if args.mode == "tiny" else gpt_torch.CONFIG
    import jupyter_llm as jl

    path = gpt_torch.find_corpus()
    corpus = jl.datasets.text(path, block_size=cfg["block_size"], val_fraction=0.1)
    _, val_ids, _ = gpt_torch.load_corpus(path)
    ours, theirs = [], []
    for seed in seeds:
        run = None
        if common.have("torch"):
            common.log(f"gpt_seeds: seed {seed}, PyTorch")
            run = gpt.torch_run(args, 0, 1, val_at=iters, seed=seed)
            theirs.append(run)
        common.log(f"gpt_seeds: seed {seed}, jl.fit")
        model = gpt.jl_fit(cfg, corpus, corpus.vocab_size, 0, iters, min(250, iters), seed=seed)[1]
        windows = run["val_windows"] if run else gpt.random_windows(val_ids, cfg, seed)
        ours.append(gpt.val_losses(model, val_ids, cfg, windows))
    label = f", {len(seeds)} seed{'s' * (len(seeds) > 1)}"
    ref_name = "PyTorch eager" if theirs else "torch not installed"
    rows = gpt.val_rows(label, {"jl.fit": ours}, theirs, ref_name, iters, len(val_ids) - cfg["block_size"],
                        gpt_torch.EVAL_ITERS * cfg["batch_size"])
    common.report(rows, args, "GPT validation loss over seeds")
    return rows


if __name__ == "__main__":
    main()
