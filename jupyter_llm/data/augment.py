"""--augment: random changes to each training batch of images, made on the device inside the compiled step.

The remedy for overfitting that sits beside dropout and weight decay: the model never sees the same picture twice, so
it cannot memorise pictures. `Augment` is built from the checked spec of `config.augment_spec` (names and amounts)
and is hashable, so it shapes the compiled step like any other part of it. Its randomness comes from a key the step
derives from the fit's seed and the step number (`batch_key`), so two fits with the same seed see the same batches,
and a resumed fit the batches the uninterrupted one saw. Evaluation and prediction never augment.

The ops work on images shaped (N, H, W) or (N, H, W, C) (channels last, as the built-in image sets and `CNN`):
- `shift`: each image moved by up to `amount` pixels along each axis (default an eighth of its smaller side, at
  least 1: 1 px for 8x8 digits, 3 for 28x28, 4 for 32x32 as in the CIFAR recipes), the border pixels extended into
  the gap (pad and random crop);
- `flip`: half the images mirrored left to right; only where that keeps the class (not for digits or letters);
- `rotate`: each image turned by up to `amount` degrees (default 10), bilinear, the border extended;
- `noise`: gaussian noise of `amount` (default 0.1) times the batch's standard deviation, so it means the same
  whatever the pixels' scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from jupyter_llm.errors import DataError

DEFAULT_ROTATE_DEGREES = 10.0
DEFAULT_NOISE = 0.1
NEEDS_FLOAT = ("rotate", "noise")  # they make values between the pixels' own: integer pixels are refused


def default_shift(h: int, w: int) -> int:
    """An eighth of the smaller side, at least one pixel."""
    return max(1, round(min(h, w) / 8))


def image_axes(example_shape: tuple, flag: str = "--augment") -> tuple[int, int]:
    """(H, W) of an example shaped (H, W) or (H, W, C); anything else is refused, saying what qualifies."""
    shape = tuple(example_shape)
    if len(shape) in (2, 3) and min(shape[:2]) >= 2:
        return int(shape[0]), int(shape[1])
    raise DataError(f"{flag} applies to images: examples shaped (H, W) or (H, W, C), channels last, at least 2x2. "
                    f"This data's examples are shaped {shape}; reshape flat images to (N, H, W) or (N, H, W, C), "
                    f"or leave {flag} off.")


@dataclass(frozen=True)
class Augment:
    """The augmentations of one fit, in the order they are applied: (name, amount) pairs, amounts resolved."""

    ops: tuple[tuple[str, float], ...]

    @classmethod
    def from_spec(cls, spec, example_shape, dtype, flag: str = "--augment") -> Augment | None:
        """`spec` (from `config.augment_spec`) for examples of `example_shape` and `dtype`: None when empty."""
        if not spec:
            return None
        h, w = image_axes(example_shape, flag)
        integer = not jnp.issubdtype(dtype, jnp.floating)
        ops = []
        for name, amount in spec:
            if integer and name in NEEDS_FLOAT:
                raise DataError(f"{flag} {name} makes values between the pixels' own, and these images are "
                                f"{jnp.dtype(dtype).name}: convert them to float32 (e.g. x / 255) or leave out "
                                f"{name}.")
            if name == "shift":
                amount = default_shift(h, w) if amount is None else amount
                if amount >= min(h, w):
                    raise DataError(f"{flag} shift={amount:g} would move {h}x{w} images out of the picture; "
                                    f"use fewer pixels than the image's smaller side ({min(h, w)}).")
                amount = int(amount)
            elif name == "rotate":
                amount = DEFAULT_ROTATE_DEGREES if amount is None else amount
            elif name == "noise":
                amount = DEFAULT_NOISE if amount is None else amount
            ops.append((name, amount))
        return cls(tuple(ops))

    def __call__(self, key, x):
        """The batch `x` (N, H, W[, C]) augmented with randomness from `key`."""
        for i, (name, amount) in enumerate(self.ops):
            x = _OPS[name](jax.random.fold_in(key, i), x, amount)
        return x

    def describe(self) -> str:
        return ",".join(name if name == "flip" else f"{name}={amount:g}" for name, amount in self.ops)


def batch_key(seed_key, step):
    """The key of the batch at `step` (an int32 array in the compiled step): from the fit's seed, so a resumed fit,
    whose state carries the step, draws what the uninterrupted one drew."""
    return jax.random.fold_in(jax.random.wrap_key_data(seed_key), step)


def seed_key(seed: int):
    """The raw key data (uint32) the compiled step receives: the fit's seed, folded apart from the data order's."""
    return jax.random.key_data(jax.random.fold_in(jax.random.key(seed), 2))


def _shift(key, x, amount: int):
    n, h, w = x.shape[:3]
    pad = [(0, 0), (amount, amount), (amount, amount)] + [(0, 0)] * (x.ndim - 3)
    padded = jnp.pad(x, pad, mode="edge")
    offsets = jax.random.randint(key, (n, 2), 0, 2 * amount + 1)

    def crop(image, offset):
        start = (offset[0], offset[1]) + (0,) * (x.ndim - 3)
        return jax.lax.dynamic_slice(image, start, (h, w, *x.shape[3:]))

    return jax.vmap(crop)(padded, offsets)


def _flip(key, x, amount):
    mirror = jax.random.bernoulli(key, 0.5, (x.shape[0],)).reshape((-1,) + (1,) * (x.ndim - 1))
    return jnp.where(mirror, x[:, :, ::-1], x)


def _rotate(key, x, degrees: float):
    n, h, w = x.shape[:3]
    angles = jax.random.uniform(key, (n,), minval=-1.0, maxval=1.0) * (degrees * math.pi / 180.0)
    rows, cols = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32) - (h - 1) / 2,
                              jnp.arange(w, dtype=jnp.float32) - (w - 1) / 2, indexing="ij")

    def turn(image, angle):
        c, s = jnp.cos(angle), jnp.sin(angle)  # where each output pixel comes from: the inverse rotation
        src_r = c * rows + s * cols + (h - 1) / 2
        src_c = -s * rows + c * cols + (w - 1) / 2
        return _bilinear(image, src_r, src_c)

    return jax.vmap(turn)(x, angles).astype(x.dtype)


def _bilinear(image, r, c):
    """`image` (H, W[, C]) sampled at fractional (r, c), coordinates clamped to the border (the edge extended)."""
    h, w = image.shape[:2]
    r, c = jnp.clip(r, 0, h - 1), jnp.clip(c, 0, w - 1)
    r0, c0 = jnp.floor(r).astype(jnp.int32), jnp.floor(c).astype(jnp.int32)
    r1, c1 = jnp.minimum(r0 + 1, h - 1), jnp.minimum(c0 + 1, w - 1)
    fr, fc = r - r0, c - c0
    if image.ndim == 3:
        fr, fc = fr[..., None], fc[..., None]
    top = image[r0, c0] * (1 - fc) + image[r0, c1] * fc
    bottom = image[r1, c0] * (1 - fc) + image[r1, c1] * fc
    return top * (1 - fr) + bottom * fr


def _noise(key, x, amount: float):
    scale = amount * jnp.std(x)
    return x + (scale * jax.random.normal(key, x.shape, jnp.float32)).astype(x.dtype)


_OPS = {"shift": _shift, "flip": _flip, "rotate": _rotate, "noise": _noise}
