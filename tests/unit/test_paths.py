import pytest

from sar2opt.paths import PathEscapeError, resolve_output


def test_relative_paths_land_under_the_root(tmp_path):
    assert resolve_output("a/b.zarr", tmp_path) == tmp_path / "a" / "b.zarr"
    assert resolve_output(tmp_path / "c.zarr", tmp_path) == tmp_path / "c.zarr"


@pytest.mark.parametrize("bad", ["../x.zarr", "a/../../x.zarr", "/etc/x.zarr"])
def test_escapes_are_refused(tmp_path, bad):
    with pytest.raises(PathEscapeError, match="outside the output root"):
        resolve_output(bad, tmp_path / "root")


def test_symlink_out_of_the_root_is_refused(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(tmp_path)
    with pytest.raises(PathEscapeError):
        resolve_output("link/x.zarr", root)


def test_no_root_means_any_path(tmp_path, monkeypatch):
    monkeypatch.delenv("SAR2OPT_OUTPUT_ROOT", raising=False)
    assert resolve_output("../x.zarr").name == "x.zarr"
    monkeypatch.setenv("SAR2OPT_OUTPUT_ROOT", str(tmp_path))
    with pytest.raises(PathEscapeError):
        resolve_output("../x.zarr")
