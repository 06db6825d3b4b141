"""Post-processing of predicted optical images: Laplacian sharpening, Wiener deconvolution.

Generators trained with L1 hedge between plausible outputs and come out blurred. Both
functions here undo part of that blur, on float images (C, H, W) or (H, W), in physical
units (never 8-bit). Pure numpy.

- ``laplacian_sharpen``: x - amount * Laplacian(x) (unsharp masking with the 3x3 Laplacian).
- ``wiener_deconvolve``: the Wiener filter for a Gaussian blur (9x9 kernel, sigma a
  setting) in the Fourier domain, H* / (|H|^2 + nsr); nsr > 0 keeps noise from exploding
  where the blur removed the signal.
"""

from __future__ import annotations

import numpy as np

LAPLACIAN = np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def _per_band(img: np.ndarray, fn) -> np.ndarray:  # noqa: ANN001
    a = np.asarray(img, dtype=np.float64)
    if a.ndim == 2:
        return fn(a)
    if a.ndim == 3:
        return np.stack([fn(b) for b in a])
    raise ValueError(f"expected (H, W) or (C, H, W), got shape {a.shape}")


def _conv2d_reflect(a: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Same-size 2-D correlation with a small odd kernel, reflect padded."""
    r = k.shape[0] // 2
    p = np.pad(a, r, mode="reflect")
    out = np.zeros_like(a)
    for i in range(k.shape[0]):
        for j in range(k.shape[1]):
            if k[i, j]:
                out += k[i, j] * p[i : i + a.shape[0], j : j + a.shape[1]]
    return out


def laplacian_sharpen(img: np.ndarray, amount: float = 0.5) -> np.ndarray:
    """Sharpened image x - amount * Laplacian(x); a constant or linear ramp is unchanged."""
    out = _per_band(img, lambda a: a - amount * _conv2d_reflect(a, LAPLACIAN))
    return out.astype(np.asarray(img).dtype, copy=False)


def gaussian_kernel(size: int = 9, sigma_px: float = 1.0) -> np.ndarray:
    """Normalised (sum 1) size x size Gaussian PSF."""
    if size % 2 == 0 or sigma_px <= 0:
        raise ValueError(f"need an odd size and sigma > 0, got {size}, {sigma_px}")
    r = np.arange(size) - size // 2
    g = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma_px**2))
    return g / g.sum()


def gaussian_blur(img: np.ndarray, sigma_px: float = 1.0, size: int = 9) -> np.ndarray:
    """Blur with the same PSF the Wiener filter inverts (reflect padded)."""
    k = gaussian_kernel(size, sigma_px)
    return _per_band(img, lambda a: _conv2d_reflect(a, k)).astype(np.asarray(img).dtype)


def wiener_deconvolve(
    img: np.ndarray, sigma_px: float = 1.0, nsr: float = 1e-3, size: int = 9
) -> np.ndarray:
    """Undo a Gaussian blur (size x size, sigma_px) with the Wiener filter of noise ratio nsr.

    The image is reflect-padded by the kernel size before the FFT, so the periodic wrap of
    the transform does not bleed one edge into the other.
    """
    k = gaussian_kernel(size, sigma_px)
    pad = size

    def one(a: np.ndarray) -> np.ndarray:
        p = np.pad(a, pad, mode="reflect")
        psf = np.zeros_like(p)
        psf[:size, :size] = k
        psf = np.roll(psf, (-(size // 2), -(size // 2)), axis=(0, 1))  # centre at (0, 0)
        h = np.fft.rfft2(psf)
        g = np.conj(h) / (np.abs(h) ** 2 + nsr)
        out = np.fft.irfft2(np.fft.rfft2(p) * g, s=p.shape)
        return out[pad:-pad, pad:-pad]

    return _per_band(img, one).astype(np.asarray(img).dtype, copy=False)
