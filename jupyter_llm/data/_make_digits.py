"""Regenerate `digits.npz`, the 8x8 digits scikit-learn ships, so the package needs no scikit-learn at run time.

Run once from the repository root (needs scikit-learn, which is not a dependency of jupyter_llm):

    python -m jupyter_llm.data._make_digits

It writes `jupyter_llm/data/digits.npz` with `images` uint8 (1797, 8, 8), values 0..16, and `labels` uint8
(1797,), compressed. Not imported by the package.
"""

from pathlib import Path

import numpy as np

OUT = Path(__file__).with_name("digits.npz")


def main(out: Path = OUT) -> Path:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.uint8)
    labels = digits.target.astype(np.uint8)
    assert images.shape == (1797, 8, 8) and images.max() == 16 and np.array_equal(images, digits.images)
    np.savez_compressed(out, images=images, labels=labels)
    return out


if __name__ == "__main__":
    print(f"wrote {main()}")
