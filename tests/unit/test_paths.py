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


def test_the_root_itself_is_not_an_output(tmp_path):
    with pytest.raises(PathEscapeError):
        resolve_output(".", tmp_path)


def _store(path, attrs):
    import json

    path.mkdir(parents=True)
    (path / "zarr.json").write_text(json.dumps({"zarr_format": 3, "attributes": attrs}))
    return path


def test_output_kind_reads_what_sar2opt_wrote(tmp_path):
    from sar2opt.paths import claim_folder, output_kind

    assert output_kind(_store(tmp_path / "c.zarr", {"sar2opt_stage": "cube"})) == "cube"
    assert output_kind(_store(tmp_path / "z.zarr", {"title": "someone's"})) is None
    zones = tmp_path / "zones"
    _store(zones / "21S.zarr", {"sar2opt_stage": "infer"})
    _store(zones / "22S.zarr", {"sar2opt_stage": "infer"})
    assert output_kind(zones) == "infer"
    (zones / "notes.txt").write_text("mine")  # a user's file among the zone stores
    assert output_kind(zones) is None
    assert output_kind(claim_folder(tmp_path / "eval", "evaluate")) == "evaluate"
    (tmp_path / "link").symlink_to(tmp_path / "c.zarr")
    assert output_kind(tmp_path / "link") is None  # never followed


def test_only_own_outputs_of_the_same_kind_are_replaced(tmp_path):
    from sar2opt.paths import NotOurOutputError, check_replaceable, remove_own_output

    check_replaceable(tmp_path / "absent", "cube")
    (tmp_path / "empty").mkdir()
    check_replaceable(tmp_path / "empty", "demo")
    user = tmp_path / "user"
    user.mkdir()
    (user / "thesis.tex").write_text("x")
    (tmp_path / "file.zarr").write_text("x")
    for p in (user, tmp_path / "file.zarr"):
        with pytest.raises(NotOurOutputError, match="is not a sar2opt demo folder"):
            remove_own_output(p, "demo")
    assert (user / "thesis.tex").read_text() == "x"
    cube = _store(tmp_path / "c.zarr", {"sar2opt_stage": "cube"})
    with pytest.raises(NotOurOutputError, match="is a sar2opt cube .*, not a mosaic"):
        check_replaceable(cube, "infer")
    check_replaceable(cube, "cube")
