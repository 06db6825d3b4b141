"""Synthetic cloud shapes for training on cloud-free cubes (a pure, seeded generator).

A cloud-removal model (SC/SCO/SCOD) learns to fill what its input's cloud mask hides. A cube
whose dates are all clear (the SSL4EO sample) has no real mask to lay on its patches
(``stream.CloudMasks``), so its patches never hide a pixel and the model learns to copy.
When no training cube lends a real mask, the patches get these shapes instead: smooth
fractal noise (a power spectrum falling as ``1 / f**SPECTRAL_SLOPE``: clumps with ragged
edges, as cumulus fields look at 10 m) thresholded so that a drawn share of the patch
(``COVER_RANGE``) is cloud. The same seed gives the same mask.
"""

from __future__ import annotations

import numpy as np

#: Cloud cover drawn per patch, uniform in this range (real cloudy S2 scenes worth filling:
#: under 10 % is barely a gap, over 60 % leaves little of the date to anchor the fill).
COVER_RANGE = (0.1, 0.6)
#: Power-spectrum slope of the noise: 2 is speckly, 4 a few smooth blobs; 3 looks like cumulus.
SPECTRAL_SLOPE = 3.0


def smooth_noise(
    rng: np.random.Generator, size_px: int, slope: float = SPECTRAL_SLOPE
) -> np.ndarray:
    """(size_px, size_px) float64 noise whose power falls as ``1 / f**slope`` (zero mean)."""
    white = rng.standard_normal((size_px, size_px))
    fy = np.fft.fftfreq(size_px)[:, None]
    fx = np.fft.rfftfreq(size_px)[None, :]
    f = np.hypot(fy, fx)
    f[0, 0] = np.inf  # no constant term: the threshold sets the cover
    spec = np.fft.rfft2(white) * f ** (-slope / 2)
    return np.fft.irfft2(spec, s=(size_px, size_px))


def synthetic_cloud_mask(
    seed: int | tuple[int, ...], size_px: int, cover: float | None = None
) -> np.ndarray:
    """(size_px, size_px) bool cloud mask from ``seed``: smooth noise above its
    ``1 - cover`` quantile, so ``cover`` of the pixels are cloud (drawn in COVER_RANGE
    from the seed when None)."""
    rng = np.random.default_rng(seed)
    if cover is None:
        cover = float(rng.uniform(*COVER_RANGE))
    if not 0.0 <= cover <= 1.0:
        raise ValueError(f"cloud cover must be in [0, 1], got {cover}")
    field = smooth_noise(rng, size_px)
    n_cloud = int(round(cover * field.size))
    out = np.zeros(field.size, dtype=bool)
    if n_cloud:
        out[np.argsort(field, axis=None, kind="stable")[-n_cloud:]] = True
    return out.reshape(field.shape)
