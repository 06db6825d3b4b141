"""'SAR + scene-fit reference': a small U-Net that corrects the per-date ridge fit.

A U-Net pooled over scenes must learn each scene's colour from speckle; a per-date linear
fit gets colour right but no texture. Here the net sees the SAR features and the ridge
prediction (the reference) and predicts only the residual, trained on the clear pixels of
the training blocks. Its last layer starts at zero, so before training it *is* the ridge.
Lives in ``evaluate`` because it is fitted per evaluation split, not shipped as a checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sar2opt.evaluate.baselines import feature_stack
from sar2opt.evaluate.protocol import Method, Scene, ridge_method, train_dates
from sar2opt.models.unet import UNetGenerator


@dataclass(frozen=True)
class ResidualSpec:
    """Size and schedule of the residual net (small: it is refitted for every seed)."""

    ngf: int = 16
    depth: int = 4
    patch_px: int = 64
    batch_size: int = 8
    steps: int = 300
    lr: float = 2e-3


def _standardise(x: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of x (T, C, H, W) over mask m (T, H, W)."""
    v = np.moveaxis(x, 1, 0)[:, m]
    return v.mean(axis=1), np.maximum(v.std(axis=1), 1e-6)


def fit_residual(
    scene: Scene, train: np.ndarray, seed: int, spec: ResidualSpec = ResidualSpec()
) -> np.ndarray:
    """Ridge per date + U-Net residual, learnt on clear training pixels; returns (T, C, H, W)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    ref = ridge_method(per_date=True)(scene, train, seed)  # (T, C, H, W), NaN where SAR is
    feats = feature_stack(scene.sar_db).astype("float32")
    loss_mask = (
        scene.clear.astype(bool) & train_dates(train, scene) & np.isfinite(scene.truth).all(1)
    )
    fm, fs = _standardise(feats, np.isfinite(feats).all(1))
    om, os_ = _standardise(np.nan_to_num(scene.truth), loss_mask)
    x = np.concatenate(
        [
            (feats - fm[:, None, None]) / fs[:, None, None],
            (ref - om[:, None, None]) / os_[:, None, None],
        ],
        axis=1,
    )
    valid_in = np.isfinite(x).all(1)
    x = np.nan_to_num(x).astype("float32")
    target = np.nan_to_num((scene.truth - ref) / os_[:, None, None]).astype("float32")

    t_n, c_in, h, w = x.shape
    c_out = scene.truth.shape[1]
    f = 2**spec.depth
    p = min(spec.patch_px, h // f * f, w // f * f)
    net = UNetGenerator(c_in, c_out, ngf=spec.ngf, depth=spec.depth)
    last = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))][
        -1
    ]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    opt = torch.optim.Adam(net.parameters(), lr=spec.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, spec.steps)
    # Crops whose loss mask has some pixels: sample origins among them.
    lm = loss_mask & valid_in
    origins = [
        (t, r, c)
        for t in range(t_n)
        for r in range(0, h - p + 1, p // 4)
        for c in range(0, w - p + 1, p // 4)
        if lm[t, r : r + p, c : c + p].mean() > 0.05
    ]
    if not origins:
        raise ValueError("no training crop with clear pixels for the residual net")
    xt, yt, mt = torch.from_numpy(x), torch.from_numpy(target), torch.from_numpy(lm)
    net.train()
    for _ in range(spec.steps):
        pick = rng.integers(0, len(origins), spec.batch_size)
        xs, ys, ms = [], [], []
        for i in pick:
            t, r, c = origins[i]
            k, flip = int(rng.integers(0, 4)), bool(rng.integers(0, 2))
            parts = [a[t, ..., r : r + p, c : c + p] for a in (xt, yt, mt)]
            parts = [torch.rot90(a, k, dims=(-2, -1)) for a in parts]
            if flip:
                parts = [torch.flip(a, dims=(-1,)) for a in parts]
            xs.append(parts[0])
            ys.append(parts[1])
            ms.append(parts[2])
        xb, yb, mb = torch.stack(xs), torch.stack(ys), torch.stack(ms)[:, None].float()
        loss = ((net(xb) - yb).abs() * mb).sum() / (mb.sum() * c_out).clamp_min(1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    hp, wp = -(-h // f) * f, -(-w // f) * f
    xin = np.pad(x, ((0, 0), (0, 0), (0, hp - h), (0, wp - w)), mode="reflect")
    with torch.inference_mode():
        res = net(torch.from_numpy(xin)).numpy()[:, :, :h, :w]
    out = ref + res * os_[None, :, None, None]
    return np.where(valid_in[:, None], out, np.nan).astype("float32")


def residual_method(spec: ResidualSpec = ResidualSpec()) -> Method:
    """The protocol method: refit ridge + residual U-Net on each seed's training blocks."""
    return lambda scene, train, seed: fit_residual(scene, train, seed, spec)
