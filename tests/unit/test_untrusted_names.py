"""Names from outside the build resolve inside their folder or are refused (tasks/paths.within),
and a model folder's genai_config.json loads nothing from elsewhere (tasks/ml/genai.check_config)."""

from __future__ import annotations

import json

import pytest

from tasks.errors import StageError
from tasks.ml.genai import check_config
from tasks.paths import within


@pytest.mark.parametrize("name", ["../x", "a/../../x", "/etc/passwd", "", ".", "a/.."])
def test_names_that_leave_the_folder_are_refused(tmp_path, name):
    with pytest.raises(StageError, match="would be written outside"):
        within(tmp_path / "dest", name, "blob")


@pytest.mark.parametrize("name", ["x", "a/b/c.json", "a/../b", "./x"])
def test_names_inside_the_folder_are_kept(tmp_path, name):
    assert within(tmp_path, name, "blob") == (tmp_path / name).resolve()


def test_a_link_out_of_the_folder_is_outside(tmp_path):
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest/link").symlink_to(tmp_path)
    with pytest.raises(StageError):
        within(tmp_path / "dest", "link/x", "blob")


def _config(folder, **session_options):
    folder.mkdir(exist_ok=True)
    config = {"model": {"decoder": {"filename": "model.onnx", "session_options": session_options}}}
    (folder / "genai_config.json").write_text(json.dumps(config))
    return folder


def test_genai_config_with_files_of_its_own_folder_passes(tmp_path):
    check_config(_config(tmp_path / "m", custom_ops_library="ops/libcustom.so"))


@pytest.mark.parametrize("library", ["/usr/lib/libevil.so", "../libevil.so"])
def test_genai_config_loading_a_library_from_elsewhere_is_refused(tmp_path, library):
    with pytest.raises(StageError, match=r"model\.decoder\.session_options\.custom_ops_library points at"):
        check_config(_config(tmp_path / "m", custom_ops_library=library))
