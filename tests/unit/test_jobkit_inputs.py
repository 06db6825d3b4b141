"""The job kit's input checks: dates first, URL credentials kept out of the config, a full
disk and an unreadable asset as one-line user errors."""

from __future__ import annotations

import argparse
import errno
import json

import pytest

from sar2opt import credentials, jobkit


def _args(**kw) -> argparse.Namespace:
    return argparse.Namespace(**{"set": [], "config": None, **kw})


@pytest.mark.parametrize(
    ("dates", "msg"),
    [
        ({"start": "2023-13-01", "end": "2023-12-31"}, "--start '2023-13-01' is not a date"),
        ({"start": "2023-08-31", "end": "2023-07-01"}, "--start 2023-08-31 is after --end"),
        ({"until": "2023-02-30"}, "--until '2023-02-30' is not a date"),
    ],
)
def test_bad_dates_fail_before_main_runs(dates, msg, capsys):
    ran = []

    @jobkit.entry
    def main(args):
        ran.append(args)
        return 0

    assert main(_args(**dates)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {msg}") and err.count("\n") == 1
    assert not ran


def test_good_dates_pass():
    jobkit.check_dates(_args(start="2023-07-01", end="2023-07-01", until="2023-08-01T00:00:00Z"))


def test_url_credentials_stay_out_of_the_config():
    url = "https://me:s3cret@stac.example.org/api/v1?sig=t0ken&x=1"
    cfg = jobkit.load_job_config(_args(stac_url=url))
    assert cfg.catalog.stac_url == "https://stac.example.org/api/v1"
    kw = credentials.client_args(cfg.catalog.stac_url)
    assert kw["parameters"] == {"sig": "t0ken", "x": "1"}
    assert kw["headers"]["Authorization"].startswith("Basic ")
    assert "s3cret" not in json.dumps(jobkit.overrides(_args(stac_url=url)))
    sets = jobkit.overrides(_args(set=[f"catalog.stac_url={url}"]))
    assert "s3cret" not in json.dumps(sets) and "t0ken" not in json.dumps(sets)


def test_disk_full_is_a_user_error():
    assert jobkit.user_error(RuntimeError("x")) is None  # a plain bug keeps its traceback
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/out/x.zarr/c/0")
        except OSError as e:
            raise RuntimeError("write failed") from e
    except RuntimeError as e:
        err = jobkit.user_error(e)
    assert str(err) == (
        "no space left on device writing /out/x.zarr/c/0: free space or choose another --out"
    )


def test_unreadable_asset_named_by_stackstac_is_a_user_error():
    from rasterio.errors import RasterioIOError

    try:
        try:
            raise RasterioIOError("HTTP response code: 404")
        except RasterioIOError as e:
            raise RuntimeError(
                "Error opening 'http://h/a.tif': RasterioIOError('HTTP response code: 404')"
            ) from e
    except RuntimeError as e:
        err = jobkit.user_error(e)
    assert str(err) == "cannot open asset http://h/a.tif: HTTP response code: 404"
