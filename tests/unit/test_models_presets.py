"""Every registered model x input set: one step changes the weights; a few hundred steps
on a fixed real MultiEarth pair halve the L1 error. Plain functions, no Ray.

The pair: Sentinel-1 VV/VH (dB) of 2019-06-08 and Sentinel-2 B2-B4 of 2019-07-01 (the
clearest date) at location -55.20_-4.39, a 32 x 32 px crop. The prior optical for SO/SOD is
the real S2 of 2019-07-26 at the same place; the DEM for SD/SOD is synthetic (a tilted
plane with a ridge), as the sample has none. The same-date cloudy S2 of SC/SCO/SCOD is the
target with a cloud mask laid over its western half (zero there, as ``normalise_cloudy``
gives). Widths are small (ngf 8, depth 3).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from sar2opt.data.inputs import INPUT_SETS, input_channels
from sar2opt.models import build_discriminator, build_generator
from sar2opt.models.presets import MODELS, preset_specs
from sar2opt.train.step import LossSpec, gan_step
from tests.helpers.data import MULTIEARTH, requires_shared_data

SMALL = {"ngf": 8, "ndf": 8, "depth": 3, "n_blocks": 2, "dropout": 0.0}
LOC = "-55.20_-4.39"
CROP = (96, 160, 32)  # row, col, size: fields and forest edge, cloud-free on both S2 dates


def _read(name: str) -> np.ndarray:
    import rasterio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the sample's tiffs carry no georeferencing
        with rasterio.open(MULTIEARTH / name) as src:
            return src.read(1).astype(np.float32)


def _std(a: np.ndarray) -> torch.Tensor:
    """Per-band standardised (1, C, P, P) crop, as the trainer's normalisation does."""
    r, c, p = CROP
    a = a[:, r : r + p, c : c + p]
    a = (a - a.mean((1, 2), keepdims=True)) / a.std((1, 2), keepdims=True)
    return torch.from_numpy(a[None].astype(np.float32))


def synthetic_dem(size: int) -> np.ndarray:
    """(1, P, P) metres: a plane rising 30 m north-east plus a 10 m sinusoidal ridge."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    return (120 + 20 * yy + 10 * xx + 10 * np.sin(6 * xx))[None].astype(np.float32)


@pytest.fixture(scope="module")
def real_pair() -> dict[str, torch.Tensor]:
    sar = np.stack([_read(f"sent1/Sentinel1_{p}_{LOC}_2019_06_08.tiff") for p in ("VV", "VH")])
    opt = np.stack([_read(f"sent2/Sentinel2_B{b}_{LOC}_2019_07_01.tiff") for b in (2, 3, 4)])
    prior = np.stack([_read(f"sent2/Sentinel2_B{b}_{LOC}_2019_07_26.tiff") for b in (2, 3, 4)])
    p = CROP[2]
    target = _std(opt / 1e4)
    cloud = torch.zeros(1, 1, p, p)
    cloud[..., : p // 2] = 1.0
    return {
        "sar": _std(sar),
        "opt": target,
        "cloudy": torch.cat([target * (1 - cloud), cloud], dim=1),
        "prior": _std(prior / 1e4),
        "dem": _std(np.pad(synthetic_dem(p), ((0, 0), (CROP[0], 0), (CROP[1], 0)))),
        "mask": torch.ones(1, 1, p, p),
    }


def _setup(name: str, input_set: str, lr: float = 2e-3) -> tuple:
    torch.manual_seed(0)
    spec, tr = preset_specs(name, input_set=input_set, **SMALL)
    in_ch, dem_ch = input_channels(input_set, 2, 3)
    gen = build_generator(spec, in_ch, 3, dem_ch)
    disc = build_discriminator(spec, in_ch + 3)
    opt_g = torch.optim.Adam(gen.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = None if disc is None else torch.optim.Adam(disc.parameters(), 2e-4, betas=(0.5, 0.999))
    return gen, disc, opt_g, opt_d, LossSpec.from_train(tr)


CASES = [(m, s) for m in MODELS for s in INPUT_SETS]


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@requires_shared_data
@pytest.mark.parametrize(("name", "input_set"), CASES)
def test_one_step_changes_the_weights(real_pair, name: str, input_set: str) -> None:
    gen, disc, opt_g, opt_d, losses = _setup(name, input_set)
    g0 = [p.detach().clone() for p in gen.parameters()]
    d0 = [] if disc is None else [p.detach().clone() for p in disc.parameters()]
    out = gan_step(gen, disc, opt_g, opt_d, real_pair, losses=losses, input_set=input_set)
    assert all(np.isfinite(v) for v in out.values())
    # Every generator tensor moves (the DEM / prior branches too), and D when there is one.
    same = [n for (n, p), a in zip(gen.named_parameters(), g0, strict=True) if torch.equal(a, p)]
    assert not same, same
    if disc is not None:
        # Every D weight moves. (A hinge loss gives the last bias exactly zero gradient while
        # all logits lie in (-1, 1): -mean(1) + mean(1). So biases are not required to.)
        moved = [not torch.equal(a, b) for a, b in zip(d0, disc.parameters(), strict=True)]
        assert all(m for m, p in zip(moved, disc.parameters(), strict=True) if p.ndim > 1)
        assert out["d_loss"] > 0
    else:
        assert out["g_total"] == pytest.approx(out["g_rec"])


@requires_shared_data
@pytest.mark.slow
@pytest.mark.parametrize(("name", "input_set"), CASES)
def test_steps_on_a_real_pair_halve_l1(real_pair, name: str, input_set: str) -> None:
    gen, disc, opt_g, opt_d, losses = _setup(name, input_set)
    l1s = []
    for step in range(300):
        out = gan_step(
            gen, disc, opt_g, opt_d, real_pair, step=step, losses=losses, input_set=input_set
        )
        l1s.append(out["g_l1"])
        if step >= 5 and np.mean(l1s[-3:]) < 0.5 * l1s[0]:
            break
    assert np.mean(l1s[-3:]) < 0.5 * l1s[0], (l1s[0], l1s[-3:], len(l1s))
