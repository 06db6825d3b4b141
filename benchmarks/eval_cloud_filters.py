"""Precision/recall of every Sentinel-2 cloud filter, on two labelled references. Prints a table.

    .venv/bin/python benchmarks/eval_cloud_filters.py [--shared ../shared/data]

References (what "truth" is, exactly):
1. SYNTHETIC: the built-in scene (sar2opt.catalog.synthetic, seed 0, 5.12 km, 8 dates). Pixel
   truth = its SCL layer, which the generator writes from the cloud/shadow fields it rendered
   (classes 3, 8, 9 = shadow/cloud). Image truth = "has any cloud/shadow pixel" (ratio > 0).
   SCL is therefore perfect here by construction; it is listed for completeness.
2. REAL: the 13 MultiEarth Sentinel-2 patches. Image truth = labelled by hand from RGB
   quicklooks (HAND_LABELS below: 8 cloudy, 5 clear). Pixel truth, only where obvious: cloud =
   bright white pixels (mean B2-B4 > 0.25 and min/max > 0.85) in hand-labelled cloudy images;
   clear = every pixel of a hand-labelled clear image; all other pixels are unlabelled and
   ignored. This pixel reference only holds easy cases (thin cloud edges, haze and shadows
   are unlabelled), so pixel recall on it is an upper bound.
Positive class = cloud (a filter "predicts cloud" when it flags the pixel / rejects the image).
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np

from sar2opt.config import CubeSpec
from sar2opt.cube import clean

REPO = Path(__file__).resolve().parents[1]
# index in sorted file-name order -> cloudy? (checked by eye on RGB quicklooks, 0-3000 DN stretch)
HAND_LABELS = {
    "-54.68_-4.17_2021_05_06": False,
    "-54.74_-4.09_2019_03_18": True,
    "-54.92_-3.61_2021_05_06": True,
    "-54.92_-3.61_2021_05_11": True,
    "-54.92_-4.25_2020_07_05": True,  # small clouds along the southern edge
    "-54.94_-4.27_2020_07_05": True,
    "-55.06_-4.09_2021_05_06": False,
    "-55.20_-4.39_2019_06_06": True,
    "-55.20_-4.39_2019_06_11": True,
    "-55.20_-4.39_2019_07_01": False,
    "-55.20_-4.39_2019_07_11": True,  # one cloud in the south-west corner
    "-55.20_-4.39_2019_07_26": False,
    "-55.20_-4.39_2020_07_20": False,
}


def _read(path: Path) -> np.ndarray:
    import rasterio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path) as r:
            return r.read(1)


def pixel_masks(rgb: np.ndarray, qa60: np.ndarray | None, scl: np.ndarray | None) -> dict:
    """Every per-pixel filter on one image; rgb is reflectance (3, y, x) B02, B03, B04."""
    spec = CubeSpec()
    out = {
        "QA60": clean.qa60_mask(qa60) if qa60 is not None else None,
        "SCL": clean.scl_mask(scl) if scl is not None else None,
        "brightness-saturation": clean.bms_cloud_mask(rgb),
        "pixel test (cube default)": clean.cloud_shadow_mask(
            rgb,
            ("B02", "B03", "B04"),
            cloud_brightness=spec.cloud_brightness,
            cloud_whiteness=spec.cloud_whiteness,
            shadow_brightness=spec.shadow_brightness,
            dilate_px=spec.cloud_dilate_px,
        ),
        "CC stage 1 (QA60 | >4096 DN)": clean.cc_cloud_pixels(qa60, rgb * 1e4),
    }
    return {k: v for k, v in out.items() if v is not None}


def image_decisions(rgb: np.ndarray, qa60, scl, exemplars) -> dict:
    """Every image-level filter: True = rejected as cloudy."""
    dec = {f"{k}: ratio>0": bool(m.any()) for k, m in pixel_masks(rgb, qa60, scl).items()}
    dec |= {f"{k}: ratio>1%": bool(m.mean() > 0.01) for k, m in pixel_masks(rgb, qa60, scl).items()}
    dn = rgb * 1e4
    rgb8 = clean.to_uint8(dn)
    dec["CC stage 2 night (V<30)"] = not clean.cc_stage_night(rgb8)
    dec["CC stage 3 dark (>10% <10)"] = not clean.cc_stage_dark(rgb8)
    if exemplars is not None:
        for beta in (0.2, 0.4, 0.6):
            dec[f"CC stage 4 exemplars beta={beta}"] = not clean.cc_stage_exemplars(
                clean.image_features(rgb8), exemplars, beta
            )
        dec["Clean Collector, all stages (beta=0.4)"] = not clean.clean_collector(
            dn, qa60, exemplars, beta=0.4
        )[0]
    return dec


def prf(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float, int, int]:
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    tp = int((pred & truth).sum())
    p = tp / max(int(pred.sum()), 1) if pred.any() else float("nan")
    r = tp / max(int(truth.sum()), 1) if truth.any() else float("nan")
    return p, r, int(truth.sum()), int(truth.size)


def synthetic_images(size_km: float = 5.12):
    from sar2opt.catalog.synthetic import generate_scene

    tmp = Path(tempfile.mkdtemp(prefix="s2o-eval-"))
    items = generate_scene(tmp, size_km=size_km)
    for it in items:
        if "SCL" not in it["assets"]:
            continue
        a = it["assets"]
        rgb = np.stack([_read(Path(a[b]["href"])) for b in ("B02", "B03", "B04")]) / 1e4
        yield it["id"], rgb, _read(Path(a["QA60"]["href"])), _read(Path(a["SCL"]["href"]))


def real_images(shared: Path):
    d = shared / "multiearth_sample" / "sent2"
    for stem, cloudy in HAND_LABELS.items():
        rgb = np.stack([_read(d / f"Sentinel2_B{b}_{stem}.tiff") for b in (2, 3, 4)]) / 1e4
        yield stem, rgb.astype("float64"), _read(d / f"Sentinel2_QA60_{stem}.tiff"), cloudy


def report(title: str, rows: dict) -> None:
    print(f"\n{title}")
    print(f"  {'filter':44s} {'precision':>9s} {'recall':>7s}  positives/total")
    for name, (pred, truth) in rows.items():
        p, r, npos, n = prf(np.concatenate(pred), np.concatenate(truth))
        print(f"  {name:44s} {p:9.3f} {r:7.3f}  {npos}/{n}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    args = ap.parse_args()

    syn = list(synthetic_images())
    syn_truth = {i: clean.scl_mask(scl, (3, 8, 9)) for i, _, _, scl in syn}
    # cloudy exemplars: the synthetic images more than half covered (no real image is used)
    exemplars = np.stack(
        [
            clean.image_features(clean.to_uint8(rgb * 1e4))
            for i, rgb, _, _ in syn
            if syn_truth[i].mean() > 0.5
        ]
    )
    print(f"{len(exemplars)} cloudy exemplars from the synthetic scene")

    pix: dict = {}
    img: dict = {}
    for i, rgb, qa, scl in syn:
        for k, m in pixel_masks(rgb, qa, scl).items():
            pix.setdefault(k, ([], []))
            pix[k][0].append(m.ravel())
            pix[k][1].append(syn_truth[i].ravel())
        others = np.stack(
            [
                clean.image_features(clean.to_uint8(r * 1e4))
                for j, r, _, _ in syn
                if j != i and syn_truth[j].mean() > 0.5
            ]
        )  # leave-one-out exemplars
        for k, v in image_decisions(rgb, qa, scl, others).items():
            img.setdefault(k, ([], []))
            img[k][0].append([v])
            img[k][1].append([bool(syn_truth[i].any())])
    report(f"SYNTHETIC pixels ({len(syn)} images, truth = SCL shadow/cloud)", pix)
    report("SYNTHETIC images (truth = any cloud/shadow pixel)", img)

    if not (args.shared / "multiearth_sample").is_dir():
        print(f"\n(real sample not found under {args.shared}: skipped)")
        return
    real = list(real_images(args.shared))
    pix, img = {}, {}
    for _, rgb, qa, cloudy in real:
        white = (rgb.mean(0) > 0.25) & (rgb.min(0) / np.maximum(rgb.max(0), 1e-6) > 0.85)
        labelled = white if cloudy else np.ones(white.shape, bool)
        for k, m in pixel_masks(rgb, qa, None).items():
            pix.setdefault(k, ([], []))
            pix[k][0].append(m[labelled])
            pix[k][1].append(np.full(int(labelled.sum()), cloudy))
        for k, v in image_decisions(rgb, qa, None, exemplars).items():
            img.setdefault(k, ([], []))
            img[k][0].append([v])
            img[k][1].append([cloudy])
    report(f"REAL MultiEarth pixels ({len(real)} images; obvious pixels only, see docstring)", pix)
    report("REAL MultiEarth images (truth = hand labels)", img)


if __name__ == "__main__":
    main()
