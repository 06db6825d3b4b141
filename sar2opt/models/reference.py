"""Residual over a per-pixel reference: out = net(x) + reference(x), one file.

A net pooled over many scenes must learn each scene's colour from speckle; a per-scene
linear fit of SAR to optical gets the colour right but no texture, and the last clear image
of the place gets both, as they were. ``ReferenceGenerator`` lets any generator predict only
what a reference misses. The reference is computed from the model's own input (no
parameters, nothing learnt), so training and inference, which both build the model through
``sar2opt.models.build_generator``, use one definition of it:

- ``prior``: the prior clear optical channels of the input (SO, SOD, SCO, SCOD). A pixel
  without a prior at inference gets the band mean there (0 once standardised: see
  ``sar2opt.data.inputs``), as the net does.
- ``scene_fit``: per sample, a ridge fit (closed form) from SAR features (the channels,
  VV - VH, their local means: :func:`sar_features`) and, in SCO/SCOD, the prior clear
  optical, to the same-date S2 reflectance over the pixels its cloud mask calls clear (SC,
  SCO, SCOD): the per-date ridge baseline of ``sar2opt.evaluate.baselines`` (the same
  :func:`fit_ridge`), fitted on the window the model sees. With the prior as a feature the
  fit is the last clear image recoloured to the date (season, haze, sensor) plus what the
  radar adds: on the real BioMassters chip under laid real clouds, 0.66 x the MAE of the
  SAR-only ridge where copying the prior is 1.1 x. A sample with fewer than
  :func:`min_clear_px` clear pixels falls back to the prior when the input set has one, else
  to the band mean (0). The fit's residual on the clear pixels is then spread into the gaps
  (:func:`fill_residual`, regression kriging: the clear land next to a cloud shows what the
  fit misses there; :func:`scene_reference` gives both). Training fits it over the window
  inference would give the patch, not over the small patch (``data.stream.
  ReferenceContext``), and hands it in as ``ref`` (:func:`reference_of` is the one
  definition both use). Inference fits every block's window the same way and blends the
  fits of neighbouring blocks (:func:`blended_scene_fit`, ``infer.run.fit_lattice``): one
  fit per window alone would step at every block edge.

Inputs arrive standardised in the order sar, cloudy, prior, dem (``data.inputs``); the
prior and the cloudy S2 are standardised with the optical statistics, the output's own
units, so a reference needs no rescaling. The wrapped net's output convolutions start at
zero: an untrained model *is* its reference. Every registry generator returns one tensor
(several hypotheses come from several forwards: ``models.hypotheses``), so the sum is one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from sar2opt.data.inputs import DEM_CH, MASK_CH, REF_KEY, input_keys
from sar2opt.models.restormer import RefinedGenerator
from sar2opt.models.sardinet import SARDINet

#: Side of the square window of the local-mean features (pixels): 5 px = 50 m at 10 m,
#: enough to average speckle while keeping field edges.
LOCAL_MEAN_PX = 5
#: Ridge penalty on standardised features: against n >= MIN_CLEAR_PX samples, a light touch
#: that keeps the collinear features (VV, VH, VV - VH) solvable.
RIDGE_ALPHA = 1.0
#: A scene fit needs at least this many clear pixels, and MIN_CLEAR_FRAC of the window: a
#: fit to a few clear pixels in a corner extrapolates badly over the rest (on the demo
#: scene's cloud-removal test patches, 1 % gave 4x the hidden-pixel MAE of 10 %).
MIN_CLEAR_PX = 64
MIN_CLEAR_FRAC = 0.1
#: Boxes from this side (px) are summed through a summed-area table (:func:`box_sum`).
SAT_FROM_PX = 25
#: Windows a blended scene fit fits at once (``blended_scene_fit``): its float64 features of
#: a 256-px window with a prior take ~6 MB, a strip of 8 blocks has 30 windows.
FIT_CHUNK = 6
#: Side of the box (px) over which a pixel's reference error is measured
#: (:func:`reference_error`), and the clear pixels it needs, else the window's mean is used.
ERROR_BOX_PX = 31
ERROR_MIN_PX = 64
#: A reference's error where no clear pixel can check it (standardised units): that of the
#: band mean on a normal band, E|z| = sqrt(2 / pi); the calibration maps it to what such
#: pixels err.
NO_CHECK_ERROR = math.sqrt(2 / math.pi)
#: The boxes (px, odd, smallest first) over which a scene fit's residual on the clear pixels
#: is spread into the gaps (:func:`fill_residual`), and the weight of each next box: 5 px
#: (50 m, a field's edge) speaks wherever it holds a clear pixel; 65 px reaches 32 px into
#: a gap, the context an inference window keeps around its block (``infer.overlap_px`` 64).
FILL_BOXES_PX = (5, 17, 65)
FILL_DECAY = 1e-3
#: How far (px) the fill reads clear pixels around a pixel: half its widest box.
FILL_REACH_PX = FILL_BOXES_PX[-1] // 2
#: Reference kinds (config.REFERENCE_NAMES lists the same names, without importing torch).
REFERENCES = ("none", "prior", "scene_fit")


# --- features and the ridge: torch, any leading dims; float64 inside ----------------------


def local_mean(x: torch.Tensor, win_px: int = LOCAL_MEAN_PX) -> torch.Tensor:
    """Same-size mean over a ``win_px`` square (odd) around each pixel of x (..., H, W),
    ignoring NaN; at the edges the window is cut to the image; an all-NaN window gives NaN."""
    if win_px % 2 != 1 or win_px < 1:
        raise ValueError(f"local-mean window must be odd and >= 1, got {win_px}")
    ok = torch.isfinite(x)
    n = box_sum(ok.to(x.dtype), win_px)
    s = box_sum(torch.where(ok, x, torch.zeros((), dtype=x.dtype, device=x.device)), win_px)
    return torch.where(n > 0, s / n.clamp_min(1), torch.full_like(s, math.nan))


def box_sum(v: torch.Tensor, win_px: int) -> torch.Tensor:
    """Sums over the ``win_px`` square (odd) around each pixel of v (..., H, W), zeros beyond
    the edge (the torch twin of ``sar2opt.ops.box_sum``, which gives numpy arrays their
    'valid' windows; this one runs on the model's device). Up to ``SAT_FROM_PX``: two 1-D
    passes; wider: a summed-area table in float64 (four reads per pixel whatever the box: a
    65-px box cost 6x a 5-px one in passes, 1x here), whose rounding (~1e-13 of the values)
    depends on where the array starts."""
    shape, r = v.shape, win_px // 2
    flat = v.reshape(-1, 1, *shape[-2:])
    if win_px >= SAT_FROM_PX:
        c = F.pad(flat.to(torch.float64), (r + 1, r, r + 1, r)).cumsum(-1).cumsum(-2)
        w = win_px
        out = c[..., w:, w:] - c[..., :-w, w:] - c[..., w:, :-w] + c[..., :-w, :-w]
        return out.to(v.dtype).reshape(shape)
    for k, p in (((win_px, 1), (r, 0)), ((1, win_px), (0, r))):
        flat = F.avg_pool2d(flat, k, 1, p, count_include_pad=True, divisor_override=1)
    return flat.reshape(shape)


def sar_features(sar: torch.Tensor, win_px: int = LOCAL_MEAN_PX) -> torch.Tensor:
    """(..., F, H, W) features of SAR (..., Cs, H, W): the channels (VV, VH and VV - VH for
    two), then their local means. In dB or standardised: a linear fit does not care."""
    base = [sar[..., i, :, :] for i in range(sar.shape[-3])]
    if len(base) == 2:
        base.append(base[0] - base[1])
    base = torch.stack(base, dim=-3)
    return torch.cat([base, local_mean(base, win_px)], dim=-3)


def n_features(n_sar: int) -> int:
    """How many channels :func:`sar_features` gives for ``n_sar`` SAR channels."""
    return 2 * (n_sar + (n_sar == 2))


@dataclass(frozen=True)
class RidgeFit:
    """Batched linear maps from standardised features to bands (float64): ``x_mean``,
    ``x_std`` (N, F), ``coef`` (N, F, C), ``intercept`` (N, C)."""

    x_mean: torch.Tensor
    x_std: torch.Tensor
    coef: torch.Tensor
    intercept: torch.Tensor

    def pick(self, k: int) -> RidgeFit:
        """Sample ``k``'s map alone (a batch of one)."""
        return RidgeFit(*(getattr(self, n)[k : k + 1] for n in _FIT_FIELDS))


_FIT_FIELDS = tuple(f.name for f in fields(RidgeFit))


def fit_ridge(
    x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, alpha: float = RIDGE_ALPHA
) -> RidgeFit:
    """Closed-form ridge per sample over the pixels ``w`` marks: ``x`` (N, F, P) features,
    ``y`` (N, C, P) targets, ``w`` (N, P) bool; unpenalised intercept.

    Features are standardised over the fitted pixels first (so ``alpha`` means the same
    whatever their units), then (ZᵀZ + alpha·I) b = Zᵀ(y - ȳ), solved in float64 on any
    device. Values outside ``w`` are ignored (NaN too). A sample without fitted pixels gets
    the zero map (callers check the count).
    """
    x64, y64 = x.to(torch.float64), y.to(torch.float64)
    wf = w.to(torch.float64).unsqueeze(1)  # (N, 1, P)
    x64 = torch.where(wf > 0, x64, torch.zeros((), dtype=torch.float64, device=x.device))
    y64 = torch.where(wf > 0, y64, torch.zeros((), dtype=torch.float64, device=y.device))
    n = wf.sum(-1).clamp_min(1.0)  # (N, 1)
    mu = x64.sum(-1) / n
    sd = (((x64 - mu[..., None]) ** 2 * wf).sum(-1) / n).sqrt()
    sd = torch.where(sd > 0, sd, torch.ones_like(sd))
    z = (x64 - mu[..., None]) / sd[..., None] * wf  # 0 outside w
    ym = y64.sum(-1) / n  # (N, C)
    gram = z @ z.transpose(1, 2)
    gram = gram + alpha * torch.eye(z.shape[1], dtype=torch.float64, device=z.device)
    coef = torch.linalg.solve(gram, z @ ((y64 - ym[..., None]) * wf).transpose(1, 2))
    return RidgeFit(mu, sd, coef, ym)


def apply_ridge(fit: RidgeFit, x: torch.Tensor) -> torch.Tensor:
    """(N, F, P) features -> (N, C, P) float64 prediction of each sample's map; NaN where a
    feature is NaN."""
    x64 = x.to(torch.float64)
    z = (x64 - fit.x_mean[..., None]) / fit.x_std[..., None]
    y = fit.coef.transpose(1, 2) @ torch.nan_to_num(z) + fit.intercept[..., None]
    bad = ~torch.isfinite(x64).all(dim=1, keepdim=True)
    return y.masked_fill(bad, math.nan)


def prior_features(prior: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The prior (N, Co, H, W) as ridge features (float64): its bands, and a 0/1 column
    where it is missing (every band exactly 0: the band mean a standardised input gets where
    no clear S2 lies within ``prior_days``, ``data.inputs.model_inputs``). A missing pixel's
    bands become the mean of the sample's pixels that have one. Otherwise a pixel with no
    prior is fitted as one whose prior is the training mean, and the fit moves with the mean
    of whatever cubes the model trained on (MultiEarth's reference went from 0.63 to 0.68 x
    the ridge when BioMassters' snow entered that mean)."""
    p = prior.to(torch.float64)
    missing = (p == 0).all(dim=1, keepdim=True)
    return torch.where(missing, prior_fill(p), p), missing.to(torch.float64)


def prior_fill(prior: torch.Tensor) -> torch.Tensor:
    """(N, Co, 1, 1) float64: per sample, the mean prior of the pixels that have one (what
    :func:`prior_features` puts where it is missing; 0 where none has one)."""
    p = prior.to(torch.float64)
    have = (~(p == 0).all(dim=1, keepdim=True)).to(torch.float64)
    return (p * have).sum((-2, -1), keepdim=True) / have.sum((-2, -1), keepdim=True).clamp_min(1)


def fit_features(
    sar: torch.Tensor,
    prior: torch.Tensor | None,
    win_px: int = LOCAL_MEAN_PX,
    missing: bool = True,
) -> torch.Tensor:
    """(N, F, H, W) float64: what a scene fit regresses on, from ``sar`` (N, Cs, H, W) and
    the ``prior`` (N, Co, H, W) or None: :func:`sar_features`, then the prior's bands (a
    missing prior filled by :func:`prior_features`), then, with ``missing``, its 0/1
    missing column."""
    f = sar_features(sar.to(torch.float64), win_px)
    if prior is None:
        return f
    bands, gap = prior_features(prior)
    return torch.cat([f, bands, gap] if missing else [f, bands], dim=1)


def min_clear_px(h: int, w: int) -> int:
    """Clear pixels a scene fit of an h x w window needs: MIN_CLEAR_PX or MIN_CLEAR_FRAC of it."""
    return max(MIN_CLEAR_PX, math.ceil(MIN_CLEAR_FRAC * h * w))


def scene_fit(
    sar: torch.Tensor,
    refl: torch.Tensor,
    clear: torch.Tensor,
    fallback: torch.Tensor | None = None,
    alpha: float = RIDGE_ALPHA,
    win_px: int = LOCAL_MEAN_PX,
    extra: torch.Tensor | None = None,
    min_px: int | None = None,
) -> torch.Tensor:
    """Per sample, the ridge from :func:`sar_features` of ``sar`` (N, Cs, H, W), and the
    ``extra`` features (N, E, H, W; the prior optical) when given, to ``refl`` (N, C, H, W)
    fitted on the ``clear`` (N, H, W) pixels, predicted everywhere (float64). Samples with
    fewer than ``min_px`` clear pixels (default :func:`min_clear_px`, the rule for a model's
    window) get ``fallback`` (N, C, H, W), or 0 without one."""
    nb, c, h, w = refl.shape
    feats = fit_features(sar, extra, win_px).reshape(nb, -1, h * w)
    clear = clear.reshape(nb, h * w)
    fit = apply_ridge(fit_ridge(feats, refl.reshape(nb, c, h * w), clear, alpha), feats)
    fit = fit.reshape(nb, c, h, w)
    need = min_clear_px(h, w) if min_px is None else min_px
    enough = (clear.sum(-1) >= need).view(nb, 1, 1, 1)
    other = torch.zeros_like(fit) if fallback is None else fallback.to(torch.float64)
    return torch.where(enough, fit, other)


def fill_residual(
    fit: torch.Tensor,
    refl: torch.Tensor,
    clear: torch.Tensor,
    boxes_px: Sequence[int] = FILL_BOXES_PX,
    decay: float = FILL_DECAY,
) -> torch.Tensor:
    """``fit`` (N, C, H, W) plus its residual on the ``clear`` (N, H, W) pixels of ``refl``
    (the same-date S2), spread to every pixel: regression kriging, float64.

    A ridge of SAR and prior explains a scene's broad colour; what it misses (a field's own
    green, a clearing's soil) is spatially coherent, and the clear pixels next to a gap show
    it. Each pixel gets the mean residual of the clear pixels in boxes of ``boxes_px`` (odd,
    smallest first), the k-th weighted ``decay**k``: the nearest box that holds clear pixels
    speaks, a wider one only where the smaller are empty; beyond the widest box's reach the
    fit stands alone. On the real test chips under laid clouds (one fit over each chip):
    MAE 0.76 x the fit alone on SSL4EO, 0.84 x on MultiEarth, 0.92 x on BioMassters."""
    ok, r = clear_residual(refl, clear, fit)
    num = torch.zeros_like(r)
    den = torch.zeros_like(ok)
    for k, b in enumerate(boxes_px):
        a = decay**k / (b * b)
        num = num + a * box_sum(r, b)
        den = den + a * box_sum(ok, b)
    # den is a sum of box means, each 0 or at least a/b^2: below the widest box's one
    # clear pixel it is rounding error, where the fit stands alone
    tiny = 0.5 * decay ** (len(boxes_px) - 1) / boxes_px[-1] ** 2
    return fit.to(torch.float64) + torch.where(den > tiny, num / den.clamp_min(tiny), 0.0)


def clear_residual(
    refl: torch.Tensor, clear: torch.Tensor, fit: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ok, r) float64: the ``clear`` (N, H, W) pixels as (N, 1, H, W) 0/1, and ``refl`` -
    ``fit`` (N, C, H, W) on them, 0 elsewhere (and where either is NaN): what the fill
    spreads (:func:`fill_residual`) and checks (:func:`fill_factor`)."""
    ok = clear[:, None].to(torch.float64)
    return ok, torch.nan_to_num(refl.to(torch.float64) - fit.to(torch.float64)) * ok


def tent_weights(centres: Sequence[float], n_px: int) -> torch.Tensor:
    """(K, n_px) float64 weights of K ascending ``centres`` (pixel-edge coordinates) for the
    pixels 0..n_px-1 (centres at i + 0.5): linear between the two centres around a pixel, all
    on the nearest one beyond the first or last; each pixel's weights sum to 1."""
    c = torch.as_tensor(list(centres), dtype=torch.float64)
    if c.numel() == 0 or (c.numel() > 1 and not bool((c[1:] > c[:-1]).all())):
        raise ValueError(f"centres must be ascending and not empty, got {list(centres)}")
    p = torch.arange(n_px, dtype=torch.float64) + 0.5
    w = torch.zeros(c.numel(), n_px, dtype=torch.float64)
    w[0, p <= c[0]] = 1.0
    w[-1, p >= c[-1]] = 1.0
    for k in range(c.numel() - 1):
        inside = (p > c[k]) & (p < c[k + 1])
        f = (p[inside] - c[k]) / (c[k + 1] - c[k])
        w[k, inside] = 1.0 - f
        w[k + 1, inside] = f
    return w


def blended_scene_fit(
    sar: torch.Tensor,
    refl: torch.Tensor,
    clear: torch.Tensor,
    windows: Sequence[Sequence[tuple[int, int, int, int]]],
    centres_y: Sequence[float],
    centres_x: Sequence[float],
    fallback: torch.Tensor | None = None,
    extra: torch.Tensor | None = None,
    alpha: float = RIDGE_ALPHA,
    win_px: int = LOCAL_MEAN_PX,
) -> torch.Tensor:
    """The scene fit of a lattice of windows, blended so that it does not step at block
    edges: (C, H, W) float64 over an area, from its ``sar`` (Cs, H, W), ``refl`` (C, H, W),
    ``clear`` (H, W), ``fallback`` and ``extra`` (the prior, (Co, H, W)) as in
    :func:`scene_fit`.

    ``windows[i][j]`` = (row, col, h, w) in the area (all one size) is the window of the
    block centred at (``centres_y[i]``, ``centres_x[j]``): each gets :func:`scene_fit`'s
    ridge over its own clear pixels (or the fallback), and each pixel gets the bilinear
    blend of the fits of the 2 x 2 block centres around it (:func:`tent_weights`), each
    applied to the pixel's own features. One fit per window, used alone, steps where one
    block meets the next (on a real BioMassters mosaic: 1.6 x the jump inside blocks); the
    blend is a block's own fit at its centre and moves linearly to the next. A window's fit
    is exactly :func:`scene_fit`'s on that window, whatever the area around it (so the
    strips that each fit a block agree); the features it is applied to take their local
    means over the area, not cut at the window's edge."""
    c, h, w = refl.shape
    sizes = {(win[2], win[3]) for row in windows for win in row}
    if len(sizes) != 1:
        raise ValueError(f"the windows of a blended scene fit must share one size, got {sizes}")
    wh, ww = sizes.pop()
    cells = [(i, j, r, c0) for i, row in enumerate(windows) for j, (r, c0, _, _) in enumerate(row)]

    def stack(a: torch.Tensor, part: Sequence) -> torch.Tensor:  # (k, ..., wh, ww)
        return torch.stack([a[..., r : r + wh, c0 : c0 + ww] for *_, r, c0 in part])

    sar64 = sar.to(torch.float64)
    p64 = None if extra is None else extra.to(torch.float64)
    fits, fills, counts = [], [], []
    for k0 in range(0, len(cells), FIT_CHUNK):  # a few windows at a time: memory
        part = cells[k0 : k0 + FIT_CHUNK]
        priors = None if p64 is None else stack(p64, part)
        x = fit_features(stack(sar64, part), priors, win_px)  # each window's own: scene_fit's
        if priors is not None:  # each window fills its missing prior with its own mean
            fills.append(prior_fill(priors))  # (k, Co, 1, 1)
        ok = stack(clear, part).reshape(len(part), -1)
        fits.append(fit_ridge(x.flatten(2), stack(refl, part).flatten(2), ok, alpha))
        counts.append(ok.sum(-1))
    fits = RidgeFit(*(torch.cat([getattr(f, n) for f in fits]) for n in _FIT_FIELDS))
    fill = torch.cat(fills) if fills else None
    enough = torch.cat(counts) >= min_clear_px(wh, ww)
    feats = sar_features(sar64[None], win_px)[0]  # (F, H, W)
    wy, wx = tent_weights(centres_y, h), tent_weights(centres_x, w)  # CPU: they index the area
    out = torch.zeros(c, h, w, dtype=torch.float64, device=refl.device)
    for k, (i, j, _, _) in enumerate(cells):
        rows, cols = torch.nonzero(wy[i] > 0)[:, 0], torch.nonzero(wx[j] > 0)[:, 0]
        if rows.numel() == 0 or cols.numel() == 0:
            continue
        ys, xs = slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)
        if enough[k]:
            f = feats[:, ys, xs]  # the pixel's features: local means over the area
            if fill is not None:
                p = p64[:, ys, xs]
                missing = (p == 0).all(dim=0, keepdim=True)
                f = torch.cat([f, torch.where(missing, fill[k], p), missing.to(p.dtype)])
            y = apply_ridge(fits.pick(k), f.flatten(1)[None])[0].reshape(c, *f.shape[1:])
        elif fallback is not None:
            y = fallback.to(torch.float64)[:, ys, xs]
        else:
            continue  # the band mean: 0
        weight = (wy[i, ys][:, None] * wx[j, xs][None, :]).to(out.device)
        out[:, ys, xs] += weight * y
    return out


def input_slices(input_set: str, in_ch: int, out_ch: int) -> dict[str, slice]:
    """Channel range of each key of ``input_set`` in a standardised model input of ``in_ch``
    channels (``data.inputs.model_input``'s order: sar first) for ``out_ch`` output bands."""
    keys = input_keys(input_set)
    width = {"cloudy": out_ch + MASK_CH, "prior": out_ch, "dem": DEM_CH}
    n_sar = in_ch - sum(width[k] for k in keys[1:])
    slices, i = {}, 0
    for k in keys:
        slices[k] = slice(i, i + (n_sar if k == "sar" else width[k]))
        i += slices[k].stop - slices[k].start
    if n_sar < 1 or i != in_ch:
        raise ValueError(f"{in_ch} input channels do not fit input set {input_set}")
    return slices


def reference_of(kind: str, x: torch.Tensor, slices: dict[str, slice]) -> torch.Tensor:
    """The ``kind`` reference (``prior`` | ``scene_fit``) of standardised input x (N, C, H,
    W) whose keys lie at ``slices`` (:func:`input_slices`), in x's dtype, without gradient:
    the one definition the model and the training stream's context reference share. A
    ``scene_fit`` is the fit with its residual spread into the gaps
    (:func:`scene_reference`)."""
    if kind == "prior":
        return x.detach()[:, slices["prior"]]
    return scene_reference(x, slices)[1]


def scene_reference(x: torch.Tensor, slices: dict[str, slice]) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit, reference) of standardised input x, both (N, Co, H, W) in x's dtype: the
    window's :func:`scene_fit` (what :func:`reference_error` checks on the clear pixels) and
    the reference a ``scene_fit`` model adds its net to, the fit with its residual on the
    clear pixels spread into the gaps (:func:`fill_residual`)."""
    sar, refl, clear, prior = fit_inputs(x.detach(), slices)
    with torch.autocast(x.device.type, enabled=False):  # the solve wants float64
        fit = scene_fit(sar, refl, clear, prior, extra=prior)
        ref = fill_residual(fit, refl, clear)
    return fit.to(x.dtype), ref.to(x.dtype)


def fit_inputs(
    x: torch.Tensor, slices: dict[str, slice]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """What a scene fit reads from standardised input x (N, C, H, W): the SAR, the same-date
    S2's bands, where its mask calls them clear, and the prior (None without one)."""
    cloudy = x[:, slices["cloudy"]]
    prior = x[:, slices["prior"]] if "prior" in slices else None
    return x[:, slices["sar"]], cloudy[:, :-MASK_CH], cloudy[:, -1] < 0.5, prior


def blended_reference_of(
    kind: str,
    x: torch.Tensor,
    slices: dict[str, slice],
    windows: Sequence[Sequence[tuple[int, int, int, int]]],
    centres_y: Sequence[float],
    centres_x: Sequence[float],
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`scene_reference` for the blocks of a lattice at once: x (1, C, H, W)
    standardised over an area holding their ``windows``; a ``scene_fit`` is blended between
    the blocks' fits (:func:`blended_scene_fit`) and its residual spread over the area
    (:func:`fill_residual`: a pixel reads the clear pixels within half its widest box, all
    inside any area that holds its block's window, so the strips agree); a ``prior`` is the
    prior (it has no seams), fit and reference alike. (fit, reference), (1, Co, H, W) each
    in x's dtype: crop a window's parts from them and pass them as ``ref_fit`` and ``ref``."""
    if kind != "scene_fit":
        ref = reference_of(kind, x, slices)
        return ref, ref
    sar, refl, clear, prior = (None if v is None else v[0] for v in fit_inputs(x.detach(), slices))
    with torch.autocast(x.device.type, enabled=False):  # the solve wants float64
        fit = blended_scene_fit(sar, refl, clear, windows, centres_y, centres_x, prior, prior)
        ref = fill_residual(fit[None], refl[None], clear[None])
    return fit[None].to(x.dtype), ref.to(x.dtype)


def reference_error(
    x: torch.Tensor,
    fit: torch.Tensor,
    slices: dict[str, slice],
    box_px: int = ERROR_BOX_PX,
    min_px: int = ERROR_MIN_PX,
) -> torch.Tensor:
    """How far the scene ``fit`` (N, Co, H, W) of standardised input x (its keys at
    ``slices``) is expected off at each pixel and band (float32, x's standardised optical
    units): where the fit can be checked (:func:`box_error` over ``box_px`` boxes with
    ``min_px`` clear pixels), scaled by how far the pixel lies outside what it was fitted on
    (:func:`extrapolation` of its :func:`fit_features`), times what of it the reference's
    fill leaves (:func:`fill_factor`). Checked on the fit, not on the reference that spreads
    its residual (:func:`scene_reference`): that one holds the clear pixels' own residual
    there, and would state the error of a pixel among them for one deep in a gap.

    The flips' spread does not see a scene fit's own error, which sets each scene's level
    (on the real test blocks MultiEarth errs 0.007 and SSL4EO 0.028 at any spread): this is
    the part of the stated uncertainty that does (``infer.predictor``)."""
    sar, refl, clear, prior = fit_inputs(x.detach(), slices)
    with torch.autocast(x.device.type, enabled=False):
        checked = box_error(refl, clear, fit.detach(), box_px, min_px)
        far = extrapolation(fit_features(sar, prior, missing=False), clear, min_px=min_px)
        kept = fill_factor(refl, clear, fit.detach())
    return checked * far * kept


def fill_factor(
    refl: torch.Tensor,
    clear: torch.Tensor,
    fit: torch.Tensor,
    boxes_px: Sequence[int] = FILL_BOXES_PX,
) -> torch.Tensor:
    """(N, 1, H, W) float32: the share of the fit's error that :func:`fill_residual` leaves
    at each pixel, by how near its nearest clear pixels lie. A pixel whose smallest box
    holding a clear pixel is the k-th is filled from clear pixels on one side of it, between
    the half-widths of boxes k-1 and k (1 to 2 px for the first box, 3 to 8 for the 17-px
    one, 9 to 32 for the 65-px one). How well such pixels predict is checked on the sample's
    clear pixels: each gets the mean residual of the clear pixels in box k moved that far
    up, down, left and right of it, and mean |r - that| / mean |r| is box k's share (r: the
    fit's residual; bands pooled). One-sided, as at a gap's edge: the box around a clear
    pixel, it read 0.3-0.5 for the first box where the filled gaps of the real chips err
    0.45-0.8 x the fit; one-sided 0.6-0.7. About 1 for white noise; 1 beyond every box,
    where the fit stands alone, and where no clear pixel can be checked."""
    ok, r = clear_residual(refl, clear, fit)
    out = torch.ones_like(ok)
    found = torch.zeros_like(ok, dtype=torch.bool)
    inner = 1
    for b in boxes_px:
        n, tot = box_sum(ok, b), box_sum(r, b)
        step = (b + inner) // 2  # the moved box spans (inner + 1) / 2 .. step + b // 2
        miss = base = torch.zeros(r.shape[0], dtype=torch.float64, device=r.device)
        for dy, dx in ((step, 0), (-step, 0), (0, step), (0, -step)):
            n_at, tot_at = moved(n, dy, dx), moved(tot, dy, dx)
            use = ((ok > 0) & (n_at > 0.5)).to(torch.float64).expand_as(r)
            miss = miss + ((r - tot_at / n_at.clamp_min(1.0)).abs() * use).sum((1, 2, 3))
            base = base + (r.abs() * use).sum((1, 2, 3))
        f = torch.where(base > 0, miss / base.clamp_min(1e-300), torch.ones_like(base))
        here = (n > 0.5) & ~found  # the pixels this box is the first to reach
        out = torch.where(here, f.view(-1, 1, 1, 1), out)
        found |= here
        inner = b
    return out.float()


def moved(v: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """v (..., H, W) read ``dy`` rows down and ``dx`` columns right: out[..., i, j] =
    v[..., i + dy, j + dx], 0 beyond the edge."""
    h, w = v.shape[-2:]
    out = torch.zeros_like(v)
    if abs(dy) >= h or abs(dx) >= w:
        return out
    src = (slice(max(dy, 0), h + min(dy, 0)), slice(max(dx, 0), w + min(dx, 0)))
    dst = (slice(max(-dy, 0), h + min(-dy, 0)), slice(max(-dx, 0), w + min(-dx, 0)))
    out[..., dst[0], dst[1]] = v[..., src[0], src[1]]
    return out


def box_error(
    refl: torch.Tensor,
    clear: torch.Tensor,
    ref: torch.Tensor,
    box_px: int = ERROR_BOX_PX,
    min_px: int = ERROR_MIN_PX,
) -> torch.Tensor:
    """Per pixel and band, the mean |``refl`` - ``ref``| (both (N, C, H, W): the same-date
    S2 and its reference) over the ``clear`` (N, H, W) pixels of the ``box_px`` box around
    it, or of the whole sample where the box has fewer than ``min_px``; ``NO_CHECK_ERROR``
    where the sample has none (float32, in refl's units). The fit is made on these clear
    pixels, so it is a slight underestimate there; the calibration absorbs it."""
    ok = clear[:, None].to(torch.float64)
    d = (refl.to(torch.float64) - ref.to(torch.float64)).abs() * ok
    count, total = box_sum(ok, box_px), box_sum(d, box_px)
    have = ok.sum((-2, -1), keepdim=True)
    whole = d.sum((-2, -1), keepdim=True) / have.clamp_min(1)
    whole = torch.where(have > 0, whole, torch.full_like(whole, NO_CHECK_ERROR))
    local = torch.where(count >= min_px, total / count.clamp_min(1), whole)
    return local.float()


def extrapolation(
    feats: torch.Tensor,
    clear: torch.Tensor,
    alpha: float = RIDGE_ALPHA,
    min_px: int = ERROR_MIN_PX,
) -> torch.Tensor:
    """(N, 1, H, W) float32 >= 1: how far each pixel's scene-fit features ``feats`` (N, F,
    H, W; :func:`fit_features` without the missing-prior column, which the clear pixels
    rarely vary in) lie outside those of the sample's ``clear`` (N, H, W) pixels, which the
    fit was made on and its error checked on: the Mahalanobis distance in the ridge's own
    metric (the standardised features' Gram matrix over the clear pixels, plus the ridge
    penalty), relative to the clear pixels' root-mean-square one, and 1 where it is smaller.
    A linear fit errs in proportion to how far it extrapolates, and the clear pixels around
    a hidden one only show its error where the hidden land is like them (under laid real
    clouds on the real BioMassters chip, |error| / box error rose from 0.9 near the clear
    pixels' features to 2 beyond them). 1 where a sample has fewer than ``min_px`` clear
    pixels (its error is the window's or unchecked) or a feature is NaN."""
    nb, nf, h, w = feats.shape
    z = feats.to(torch.float64).reshape(nb, nf, h * w)
    fine = torch.isfinite(z).all(dim=1)  # (N, P)
    wf = (clear.reshape(nb, h * w) & fine).to(torch.float64)[:, None]  # (N, 1, P)
    n = wf.sum(-1, keepdim=True).clamp_min(1.0)  # (N, 1, 1)
    z = torch.nan_to_num(z)
    z = z - (z @ wf.transpose(1, 2)) / n  # centred on the clear pixels' mean
    cov = (z * wf) @ z.transpose(1, 2) / n  # (N, F, F) over the clear pixels
    # The standardised features' Gram matrix plus the ridge penalty, (Z/sd)'(Z/sd)/n +
    # alpha/n I, is diag(1/sd) (cov + alpha/n diag(sd^2)) diag(1/sd): the same distance
    # without standardising every pixel (a constant feature's sd taken as 1, as there).
    var = torch.diagonal(cov, dim1=1, dim2=2)
    var = torch.where(var > 0, var, torch.ones_like(var))
    metric = cov + torch.diag_embed(alpha / n[..., 0] * var)
    q = (z * torch.linalg.solve(metric, z)).sum(1)  # (N, P): the squared distance
    typical = (q * wf[:, 0]).sum(-1, keepdim=True) / n[:, 0]
    ratio = (q / typical.clamp_min(1e-12)).clamp_min(1.0).sqrt()
    use = (wf[:, 0].sum(-1, keepdim=True) >= min_px) & fine
    m = torch.where(use, ratio, torch.ones_like(ratio))
    return m.reshape(nb, 1, h, w).float()


# --- the model ------------------------------------------------------------------------------


def output_convs(net: nn.Module) -> list[nn.Module]:
    """The convolutions that make a generator's output: its last one; for SARDINet each
    band decoder's last; for a refined generator those of both stages (y0 + refiner)."""
    if isinstance(net, RefinedGenerator):
        return output_convs(net.base) + output_convs(net.refiner)
    if isinstance(net, SARDINet):
        return [c for d in net.decoders for c in output_convs(d)]
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    if not convs:
        raise ValueError(f"{type(net).__name__} has no convolution to start at zero")
    return convs[-1:]


def zero_output(net: nn.Module) -> nn.Module:
    """Start ``net``'s output at exactly 0 (zero weights and bias of :func:`output_convs`)."""
    for conv in output_convs(net):
        nn.init.zeros_(conv.weight)
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)
    return net


class ReferenceGenerator(nn.Module):
    """Any generator (N, Co + in_ch, H, W) -> (N, Co, H, W), fed the reference and the input,
    predicting a residual over a reference of ``kind`` (``prior`` | ``scene_fit``) computed
    from the input (N, in_ch, H, W) of ``input_set``."""

    def __init__(self, net: nn.Module, kind: str, input_set: str, in_ch: int, out_ch: int) -> None:
        super().__init__()
        keys = input_keys(input_set)
        if kind == "prior" and "prior" not in keys:
            raise ValueError(f"reference 'prior' needs an input set with a prior, not {input_set}")
        if kind == "scene_fit" and "cloudy" not in keys:
            raise ValueError(f"reference 'scene_fit' needs a cloudy S2 input, not {input_set}")
        if kind not in REFERENCES[1:]:
            raise ValueError(f"unknown reference {kind!r}; choices: {', '.join(REFERENCES[1:])}")
        self.slices = input_slices(input_set, in_ch, out_ch)
        self.net, self.kind, self.out_ch = zero_output(net), kind, out_ch
        self.stride = net.stride

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """(N, Co, H, W) reference of standardised input x, in the output's units and dtype;
        a constant of the model (no gradient flows through it)."""
        return reference_of(self.kind, x, self.slices)

    def reference_field(
        self,
        x: torch.Tensor,
        windows: Sequence[Sequence[tuple[int, int, int, int]]],
        centres_y: Sequence[float],
        centres_x: Sequence[float],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(fit, reference) over an area holding a lattice of block ``windows`` (x: (1, C,
        H, W)), blended between the blocks' fits (:func:`blended_reference_of`): what
        inference passes as each window's ``ref_fit`` and ``ref`` so that the mosaic does not
        step at block edges."""
        return blended_reference_of(self.kind, x, self.slices, windows, centres_y, centres_x)

    def forward(self, x: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
        """``ref``: the reference when the caller fitted it over a larger context than x
        (training patches: ``data.stream.ReferenceContext``); else computed from x, as
        inference does over its window."""
        # The net sees the reference ahead of the input (the DEM stays trailing, where a
        # fusing generator looks for it): a fit and a prior fallback err differently, and
        # a window may get either (training's laid clouds often hide a whole patch).
        ref = self.reference(x) if ref is None else ref.detach().to(x.dtype)
        return self.net(torch.cat([ref, x], dim=1)) + ref


def given_reference(batch: dict) -> dict:
    """The ``ref`` keyword of a generator call: the batch's precomputed reference, if any."""
    return {REF_KEY: batch[REF_KEY]} if REF_KEY in batch else {}
