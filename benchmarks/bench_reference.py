"""CPU cost of a scene-fit model's reference and its stated error per inference window.

A scene-fit model (``model.reference: scene_fit``) fits its reference on every window it
predicts (``models.reference.scene_fit``), spreads the fit's residual on the clear pixels into
the gaps (``fill_residual``) and, for the ``uncertainty`` band, measures the fit's error where
it can be checked (``box_error``), how far each pixel extrapolates (``extrapolation``) and
what share of the error the fill leaves (``fill_factor``). This prints each one's
milliseconds per window beside the floor they ride on: the same model's forward on that
window with the reference given (the net alone, what any model costs). The model is the
real recipe's (``jobs/configs/real.yaml``: U-Net, SCO inputs, 3 bands out), untrained
(speed does not depend on training); inputs are random standardised values with 30 % of
the same-date S2 masked as cloud. Median of --reps runs after one warm-up, batch 1, on
--threads threads.

    .venv/bin/python benchmarks/bench_reference.py [--window-px 256] [--threads 1] [--reps 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from sar2opt.config import load_config
from sar2opt.data.inputs import input_channels
from sar2opt.models import build_generator
from sar2opt.models.reference import (
    box_error,
    extrapolation,
    fill_factor,
    fill_residual,
    fit_features,
    fit_inputs,
    scene_fit,
    scene_reference,
)

REAL_CONFIG = Path(__file__).resolve().parents[1] / "jobs" / "configs" / "real.yaml"
OUT_BANDS = 3  # B02 B03 B04: the bands the three real sets share


def median_ms(fn: Callable[[], object], reps: int) -> float:
    """Median wall milliseconds of ``fn()`` over ``reps`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--window-px", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    spec = load_config(REAL_CONFIG).model
    in_ch, dem_ch = input_channels(spec.input_set, 2, OUT_BANDS)
    torch.manual_seed(0)
    model = build_generator(spec, in_ch, OUT_BANDS, dem_ch).eval()
    n = args.window_px
    x = torch.randn(1, in_ch, n, n)
    mask = model.slices["cloudy"].stop - 1  # the cloud-mask channel: 1 = cloud
    x[:, mask] = (torch.rand(1, n, n) < 0.3).float()
    sl = model.slices
    sar, refl, clear, prior = fit_inputs(x, sl)
    with torch.inference_mode():
        fit, ref = scene_reference(x, sl)
        rows = {
            "forward (reference given): the floor": median_ms(lambda: model(x, ref=ref), args.reps),
            "scene fit": median_ms(
                lambda: scene_fit(sar, refl, clear, prior, extra=prior), args.reps
            ),
            "residual fill (fill_residual)": median_ms(
                lambda: fill_residual(fit, refl, clear), args.reps
            ),
            "checked error (box_error)": median_ms(lambda: box_error(refl, clear, fit), args.reps),
            "extrapolation": median_ms(
                lambda: extrapolation(fit_features(sar, prior, missing=False), clear), args.reps
            ),
            "fill's share (fill_factor)": median_ms(
                lambda: fill_factor(refl, clear, fit), args.reps
            ),
        }
    floor = rows["forward (reference given): the floor"]
    print(
        f"{spec.generator} ngf {spec.ngf} depth {spec.depth}, {spec.input_set}, "
        f"{n} x {n} px window, batch 1, {args.threads} thread(s), median of {args.reps}\n"
    )
    print("| step | ms per window | x forward |")
    print("|---|---|---|")
    for name, ms in rows.items():
        print(f"| {name} | {ms:.1f} | {ms / floor:.2f} |")


if __name__ == "__main__":
    main()
