"""Label rasters onto the cube's grid (georeferenced, and the two real sets without a
georeference), bins, slope classes, and the downstream random forest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sar2opt.evaluate.labels import bin_names, load_labels, slope_regions, static_dem
from sar2opt.grid import GridSpec

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
ME = DATA / "multiearth_sample" / "deforestation"
BMS = DATA / "biomassters_sample" / "ground_truth" / "0060c0a5_agbm.tif"
# the real label files and the test's own have no georeference, on purpose
pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


def _write(path: Path, a: np.ndarray, grid: GridSpec | None, nodata=None) -> Path:
    import rasterio

    kw = {"crs": grid.crs, "transform": grid.transform} if grid is not None else {}
    with rasterio.open(
        path, "w", driver="GTiff", height=a.shape[0], width=a.shape[1], count=1,
        dtype=a.dtype, nodata=nodata, **kw,
    ) as dst:  # fmt: skip
        dst.write(a, 1)
    return path


def test_georeferenced_labels_are_warped_by_nearest_neighbour(tmp_path):
    cube = GridSpec(32721, 10.0, (698700.0, 9514000.0, 699340.0, 9514640.0))  # 64 x 64
    # labels at 20 m, shifted 2 cube pixels east and south, covering the cube's centre only
    lab_grid = GridSpec(32721, 20.0, (698720.0, 9514020.0, 699240.0, 9514620.0))
    a = np.zeros(lab_grid.shape, "uint8")
    a[:, 13:] = 1  # east of x = 698720 + 13 * 20 = 298980 -> class 1
    a[0, 0] = 255  # nodata
    lm = load_labels(_write(tmp_path / "l.tif", a, lab_grid, nodata=255), cube)
    assert lm.names == {0: "0", 1: "1"} and "warped through its georeference" in lm.source
    # cube column c covers x 698700 + 10 c: the labels cover columns 2-53 and rows 2-61;
    # class 1 from column 28, class 0 on columns 2-27
    assert (lm.classes[10, 28:54] == 1).all() and (lm.classes[10, 2:28] == 0).all()
    assert (lm.classes[:, :2] == -1).all() and (lm.classes[:, 54:] == -1).all()
    assert (lm.classes[:2] == -1).all() and (lm.classes[62:] == -1).all()
    assert (lm.classes[2:62, 4:54] >= 0).all()
    assert lm.classes[2, 2] == -1 and lm.classes[3, 3] == -1  # the nodata pixel (20 m)
    regions = lm.regions()
    assert set(regions) == {"class 0", "class 1"} and regions["class 1"].sum() > 0


def test_continuous_labels_need_bins_and_get_named_classes(tmp_path):
    grid = GridSpec(32635, 10.0, (500000.0, 6899920.0, 500080.0, 6900000.0))  # 8 x 8
    a = np.linspace(-10, 300, 64, dtype="float32").reshape(8, 8)
    path = _write(tmp_path / "agb.tif", a, grid)
    with pytest.raises(ValueError, match="continuous values: give --label-bins"):
        load_labels(path, grid)
    lm = load_labels(path, grid, [0, 50, 100, 200])
    assert lm.names == {0: "[0, 50)", 1: "[50, 100)", 2: "[100, 200)", 3: ">= 200"}
    want = np.digitize(a, [0, 50, 100, 200]) - 1
    assert np.array_equal(lm.classes, want)  # below 0: -1, no class
    assert bin_names([1.5, 3]) == {0: "[1.5, 3)", 1: ">= 3"}
    with pytest.raises(ValueError, match="must increase"):
        load_labels(path, grid, [50, 0])


def test_a_label_without_georeference_of_no_known_set_is_refused(tmp_path):
    grid = GridSpec(32635, 10.0, (500000.0, 6899920.0, 500080.0, 6900000.0))
    path = _write(tmp_path / "mine.tif", np.zeros((8, 8), "uint8"), None)
    with pytest.raises(ValueError, match="no georeference"):
        load_labels(path, grid)


@pytest.mark.skipif(not ME.is_dir(), reason="needs ../shared/data/multiearth_sample")
def test_multiearth_deforestation_on_its_own_patch_grid_and_off_the_s1_location():
    """A real label lands on the grid its name gives, pixel for pixel; the S1 location of
    the sample (-55.20, -4.39) has no label (the sample's trap: the four label patches lie
    elsewhere), which is one clear error."""
    import rasterio

    from sar2opt.catalog.multiearth import patch_grid

    path = ME / "Deforestation_-55.06_-4.09_2021_05_01.tiff"
    with rasterio.open(path) as src:
        raw = src.read(1)
    lm = load_labels(path, patch_grid(-55.06, -4.09))
    assert np.array_equal(lm.classes, raw.astype("int16"))
    assert lm.names == {0: "0", 1: "1"} and "MultiEarth patch grid" in lm.source
    assert int((lm.classes == 1).sum()) == 40515  # the README's counts, unchanged
    with pytest.raises(ValueError, match="no labelled pixel falls on the cube's grid"):
        load_labels(path, patch_grid(-55.20, -4.39))


@pytest.mark.skipif(not BMS.is_file(), reason="needs ../shared/data/biomassters_sample")
def test_biomassters_biomass_strata_on_the_chip_grid():
    import rasterio

    from sar2opt.catalog.sets import BIOMASSTERS_GRID as g

    grid = GridSpec(g["epsg"], 10.0, (500000.0, 6900000.0 - 2560, 502560.0, 6900000.0))
    with rasterio.open(BMS) as src:
        raw = src.read(1)
    lm = load_labels(BMS, grid, [0, 50, 100, 200])
    assert "BioMassters chip grid" in lm.source
    assert np.array_equal(lm.classes, np.digitize(raw, [0, 50, 100, 200]) - 1)
    counts = {n: int((lm.classes == k).sum()) for k, n in lm.names.items()}
    assert sum(counts.values()) == 256 * 256 and min(counts.values()) > 1000
    # a cube cut from the chip (its upper-left 64 px) gets the same pixels
    sub = load_labels(BMS, grid.subgrid(0, 0, 64, 64), [0, 50, 100, 200])
    assert np.array_equal(sub.classes, lm.classes[:64, :64])


def test_slope_classes_from_a_dem():
    res = 10.0
    x = np.arange(30) * res
    flat = np.zeros((20, 30)) + 100.0
    gentle = np.broadcast_to(x * np.tan(np.radians(5.0)), (20, 30))
    steep = np.broadcast_to(x * np.tan(np.radians(20.0)), (20, 30))
    for dem, name in ((flat, "slope flat <2°"), (gentle, "slope gentle 2-10°"),
                      (steep, "slope steep >10°")):  # fmt: skip
        r = slope_regions(dem, res)
        assert r[name].all() and sum(m.sum() for m in r.values()) == dem.size, name
    gap = flat.copy()
    gap[5, 5] = np.nan
    r = slope_regions(gap, res)
    assert not any(m[5, 5] for m in r.values())  # a DEM gap is in no class
    dem = np.full((3, 1, 4, 4), np.nan)
    dem[1, 0] = 7.0
    dem[2, 0] = 9.0
    assert (static_dem(dem) == 7.0).all()


def test_downstream_forest_real_vs_synthesised_s2():
    from sar2opt.evaluate.downstream import MAJORITY, REAL, downstream_check, downstream_summary
    from sar2opt.evaluate.protocol import Scene

    rng = np.random.default_rng(0)
    t, h, w = 2, 32, 32
    labels = (rng.random((h, w)) < 0.3).astype("int16")  # 30 % class 1
    labels[0, 0] = -1
    truth = np.where(labels[None, None] == 1, 0.3, 0.1) + rng.normal(0, 0.01, (t, 2, h, w))
    scene = Scene(
        np.zeros((t, 2, h, w), "float32"), truth.astype("float32"), np.ones((t, h, w), bool),
        ("B04", "B08"), ("2020-01-01", "2020-01-02"),
    )  # fmt: skip
    train = np.ones((h, w), bool)
    train[:, 16:] = False
    score = np.broadcast_to(~train, (t, h, w)).copy()
    flat = np.full_like(truth, 0.1)
    half = truth.copy()
    half[..., :8] = np.nan  # no prediction on the top quarter rows... columns 0-7
    check = downstream_check(labels)
    r = check(scene, train, score, {"copy": truth, "flat": flat, "half": half}, 0)
    acc = r["accuracy"]
    n1 = (labels[:, 16:] == 1).mean()
    assert acc[REAL] == pytest.approx(1.0) and acc["copy"] == pytest.approx(1.0)
    assert acc["flat"] == pytest.approx(1 - n1)  # all class 0: the majority's accuracy
    assert acc[MAJORITY] == pytest.approx(1 - n1)
    assert r["pixels"][REAL] == 2 * 16 * 32 and r["pixels"]["half"] == 2 * 16 * 32  # cols 16+
    assert r["train_px"] == 2 * 16 * 32 - 2  # the unlabelled pixel of both dates left out
    s = downstream_summary([r, r])
    assert list(s)[:2] == [REAL, MAJORITY] and s["flat"]["accuracy"] == (acc["flat"], 0.0)


def test_a_georeferenced_netcdf_label_reads_like_its_geotiff(tmp_path):
    import rasterio.shutil

    grid = GridSpec(32721, 10.0, (698700.0, 9514560.0, 698780.0, 9514640.0))  # 8 x 8
    a = (np.arange(64).reshape(8, 8) % 3).astype("uint8")
    tif = _write(tmp_path / "l.tif", a, grid)
    rasterio.shutil.copy(tif, tmp_path / "l.nc", driver="netCDF")
    lm = load_labels(tmp_path / "l.nc", grid)
    assert np.array_equal(lm.classes, a) and lm.names == {0: "0", 1: "1", 2: "2"}
    # the MultiEarth netCDF has no georeference for its stacked patches: refused, not guessed
    nc = DATA / "multiearth_sample" / "deforestation_sample.nc"
    if nc.is_file():
        with pytest.raises(ValueError, match="no georeference"):
            load_labels(nc, grid)
