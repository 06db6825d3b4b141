"""World-coordinate noise: every value is a pure function of (seed, stream, map position).

Why: a synthetic Earth must give the same pixel for the same place and date whatever extent or
tiling was asked for, so nothing may depend on array indices, array shapes or a sequential RNG.
Random numbers come from hashing integer lattice coordinates (splitmix64); smooth fields are
value noise on a lattice of ``spacing_m`` metres in map coordinates, interpolated with cubic
B-splines by fixed-order 4-tap sums (no BLAS, whose summation order changes with array shape),
so results are bitwise identical for a pixel whatever tile it is computed in.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_KX = np.uint64(0x9E3779B97F4A7C15)
_KY = np.uint64(0xC2B2AE3D27D4EB4F)
_KS = np.uint64(0x165667B19E3779F9)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (wrapping uint64 arithmetic)."""
    z = z ^ (z >> np.uint64(30))
    z = z * _M1
    z = z ^ (z >> np.uint64(27))
    z = z * _M2
    return z ^ (z >> np.uint64(31))


def stream_key(seed: int, *stream: int) -> np.uint64:
    """One 64-bit key for a (seed, stream...) tuple: independent noise per field and date."""
    with np.errstate(over="ignore"):
        h = _mix(np.array([int(seed) & 0xFFFFFFFFFFFFFFFF], np.uint64) * _KS)
        for s in stream:
            h = _mix(h ^ (np.array([int(s) & 0xFFFFFFFFFFFFFFFF], np.uint64) * _KX))
    return np.uint64(h[0])


def hash_grid(key: np.uint64, ix: np.ndarray, iy: np.ndarray) -> np.ndarray:
    """uint64 hash of integer lattice coordinates: (len(iy), len(ix)) for 1-D ``ix``, ``iy``."""
    ixu = np.asarray(ix, np.int64).astype(np.uint64)
    iyu = np.asarray(iy, np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        hx = _mix(ixu * _KX ^ key)
        return _mix(hx[None, :] ^ _mix(iyu * _KY + key)[:, None])


def uniform_grid(key: np.uint64, ix: np.ndarray, iy: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) float32 per integer lattice point (24 bits)."""
    h = hash_grid(key, ix, iy)
    return ((h >> np.uint64(40)).astype(np.float32)) * np.float32(2.0**-24)


def normal_grid(key: np.uint64, ix: np.ndarray, iy: np.ndarray) -> np.ndarray:
    """Standard normal float32 per integer lattice point (Box-Muller on two 24-bit halves)."""
    h = hash_grid(key, ix, iy)
    u1 = ((h >> np.uint64(40)).astype(np.float32) + np.float32(0.5)) * np.float32(2.0**-24)
    u2 = ((h & np.uint64(0xFFFFFF)).astype(np.float32)) * np.float32(2.0**-24)
    r = np.sqrt(np.float32(-2.0) * np.log(u1))
    return (r * np.cos(np.float32(2.0 * np.pi) * u2)).astype(np.float32)


def gamma_speckle(key: np.uint64, ix: np.ndarray, iy: np.ndarray, looks: float) -> np.ndarray:
    """Unit-mean gamma(looks) multiplicative speckle per pixel (Wilson-Hilferty transform)."""
    z = normal_grid(key, ix, iy)
    c = np.float32(1.0 / (9.0 * looks))
    g = np.maximum(np.float32(1.0) - c + z * np.sqrt(c), np.float32(0.0)) ** 3
    return g.astype(np.float32)


def _bspline_weights(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lattice start index and the 4 cubic B-spline weights for positions ``t`` (lattice units)."""
    i0 = np.floor(t).astype(np.int64)
    f = t - i0
    f2 = f * f
    f3 = f2 * f
    w = np.stack(
        [
            (1.0 - f) ** 3 / 6.0,
            (3.0 * f3 - 6.0 * f2 + 4.0) / 6.0,
            (-3.0 * f3 + 3.0 * f2 + 3.0 * f + 1.0) / 6.0,
            f3 / 6.0,
        ]
    ).astype(np.float32)
    return i0 - 1, w


# Standard deviation of B-spline-interpolated uniform(-1, 1) value noise (2-D), measured once:
# used to give every octave unit variance so field amplitudes mean what they say.
_VALUE_NOISE_STD = 0.2775


def _value_noise_t(xs: np.ndarray, ys: np.ndarray, spacing_m: float, key: np.uint64) -> np.ndarray:
    """``value_noise`` transposed, (len(xs), len(ys)): row gathers are contiguous, hence fast."""
    jx, wx = _bspline_weights(np.asarray(xs, np.float64) / spacing_m)
    jy, wy = _bspline_weights(np.asarray(ys, np.float64) / spacing_m)
    bx, by = int(jx.min()), int(jy.min())
    nx, ny = int(jx.max()) - bx + 4, int(jy.max()) - by + 4
    lat = uniform_grid(key, np.arange(bx, bx + nx), np.arange(by, by + ny))
    lat = (lat * np.float32(2.0) - np.float32(1.0)) * np.float32(1.0 / _VALUE_NOISE_STD)
    ry = jy - by
    t = wy[0][:, None] * lat[ry]
    for k in range(1, 4):
        t += wy[k][:, None] * lat[ry + k]
    tt = np.ascontiguousarray(t.T)
    rx = jx - bx
    out = tt[rx]
    out *= wx[0][:, None]
    for k in range(1, 4):
        tmp = tt[rx + k]
        tmp *= wx[k][:, None]
        out += tmp
    return out


def value_noise(xs: np.ndarray, ys: np.ndarray, spacing_m: float, key: np.uint64) -> np.ndarray:
    """Smooth zero-mean unit-std field at pixel centres ``xs`` (1-D) x ``ys`` (1-D), float32.

    Lattice values are hashed from integer ``floor(coord / spacing_m)`` indices, so the field is
    a pure function of map position; shape (len(ys), len(xs)).
    """
    return np.ascontiguousarray(_value_noise_t(xs, ys, spacing_m, key).T)


def fbm(
    xs: np.ndarray,
    ys: np.ndarray,
    key: np.uint64,
    *,
    outer_m: float,
    inner_m: float,
    gain: float = 0.5,
) -> np.ndarray:
    """Fractal (fBm) field: octaves from ``outer_m`` down to ``inner_m`` spacing, unit std.

    Each octave halves the spacing and multiplies the amplitude by ``gain`` (0.5: terrain-like
    1/k^2 spectrum; 0.6-0.7: rougher, cloud-like). Normalised to unit variance.
    """
    out = None
    amp, var = 1.0, 0.0
    spacing = float(outer_m)
    octave = 0
    while spacing >= inner_m * 0.999:
        v = _value_noise_t(xs, ys, spacing, _octave_key(key, octave))
        if amp != 1.0:
            v *= np.float32(amp)
        out = v if out is None else out + v
        var += amp * amp
        amp *= gain
        spacing /= 2.0
        octave += 1
    if out is None:
        raise ValueError(f"outer_m {outer_m} < inner_m {inner_m}: no octave")
    out *= np.float32(1.0 / np.sqrt(var))
    return np.ascontiguousarray(out.T)


def fbm_bound(outer_m: float, inner_m: float, gain: float = 0.5) -> float:
    """Largest |value| ``fbm`` can take (B-spline weights are a partition of unity)."""
    amp, var, tot = 1.0, 0.0, 0.0
    spacing = float(outer_m)
    while spacing >= inner_m * 0.999:
        tot += amp
        var += amp * amp
        amp *= gain
        spacing /= 2.0
    return tot / _VALUE_NOISE_STD / float(np.sqrt(var))


def _octave_key(key: np.uint64, octave: int) -> np.uint64:
    with np.errstate(over="ignore"):
        return np.uint64(_mix(np.array([key ^ np.uint64(octave + 1) * _KY], np.uint64))[0])


@functools.cache
def fbm_quantiles(outer_m: float, inner_m: float, gain: float) -> np.ndarray:
    """1001 quantiles (0, 0.001, .., 1) of ``fbm``'s values, measured once on a fixed sample.

    Lets a target fraction (e.g. cloud cover) become a fixed threshold, the same for every
    extent, instead of a per-scene quantile that would change with the requested area.
    """
    samples = []
    step = outer_m / 7.3
    for k in range(6):
        xs = 1.0e6 * (k + 1) + np.arange(96) * step
        ys = -2.0e6 * (k + 1) + np.arange(96) * step
        samples.append(
            fbm(xs, ys, stream_key(12345, k), outer_m=outer_m, inner_m=inner_m, gain=gain)
        )
    v = np.concatenate([s.ravel() for s in samples]).astype(np.float64)
    return np.quantile(v, np.linspace(0.0, 1.0, 1001))


def fbm_threshold(fraction_above: float, outer_m: float, inner_m: float, gain: float) -> float:
    """Threshold above which ~``fraction_above`` of an fbm field's area lies."""
    q = fbm_quantiles(float(outer_m), float(inner_m), float(gain))
    p = float(np.clip(1.0 - fraction_above, 0.0, 1.0))
    return float(np.interp(p, np.linspace(0.0, 1.0, 1001), q))


def pixel_indices(origin: float, n: int, res_m: float, descending: bool = False) -> np.ndarray:
    """Global integer pixel indices (int64) of ``n`` pixels from lattice-aligned ``origin``.

    ``descending`` for rows (north to south): row r is at global index ``origin/res - 1 - r``.
    """
    g0 = round(origin / res_m)
    if descending:
        return g0 - 1 - np.arange(n, dtype=np.int64)
    return g0 + np.arange(n, dtype=np.int64)


def centres(idx: np.ndarray, res_m: float) -> np.ndarray:
    """Map coordinates of pixel centres from global pixel indices (exact for the same index)."""
    return (idx.astype(np.float64) + 0.5) * res_m


def rotate_key(key: np.uint64, salt: Sequence[int]) -> np.uint64:
    """A derived key (e.g. per date) from a field key and integers."""
    k = key
    with np.errstate(over="ignore"):
        for s in salt:
            k = np.uint64(
                _mix(np.array([k ^ (np.uint64(int(s) & 0xFFFFFFFF) * _KX)], np.uint64))[0]
            )
    return k


def uniform_at(key: np.uint64, *ints: np.ndarray | int) -> np.ndarray:
    """Uniform [0, 1) float64 hashed elementwise from broadcast integer arrays (e.g. lot ids)."""
    arrays = np.broadcast_arrays(*[np.asarray(a, np.int64) for a in ints])
    with np.errstate(over="ignore"):
        h = np.full(arrays[0].shape, key, np.uint64)
        for k, a in enumerate(arrays):
            h = _mix(h ^ (a.astype(np.uint64) * _KX + np.uint64(k + 1) * _KY))
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53


def hash_at(key: np.uint64, *ints: np.ndarray | int) -> np.ndarray:
    """uint64 hash elementwise from broadcast integer arrays (an id to derive several draws)."""
    arrays = np.broadcast_arrays(*[np.asarray(a, np.int64) for a in ints])
    with np.errstate(over="ignore"):
        h = np.full(arrays[0].shape, key, np.uint64)
        for k, a in enumerate(arrays):
            h = _mix(h ^ (a.astype(np.uint64) * _KX + np.uint64(k + 1) * _KY))
    return h


def draw(h: np.ndarray, tag: int) -> np.ndarray:
    """Uniform [0, 1) float64 number ``tag`` derived from ids hashed by ``hash_at``."""
    with np.errstate(over="ignore"):
        z = _mix(h ^ (np.uint64(tag + 1) * _KS))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53
