"""Data from outside the build (blob listings, a model hub's file list, run-cache entries, a cached
ONNX folder) never writes or loads anything outside the folder it belongs to."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import doit, edit_params
from tests.e2e.test_azure import azure_env
from tests.fakes.azure import add_hostile_blob, add_model
from tests.fakes.hub import FakeHub

pytestmark = pytest.mark.slow

ESCAPES = ["../../../../escaped.txt", "/escaped.txt"]  # `..` segments; a leading `/` (absolute after the prefix)


@pytest.mark.parametrize("name", ESCAPES)
def test_a_blob_named_outside_its_folder_is_refused(built_copy, tmp_path, name):
    state = tmp_path / "azure"
    add_model(state, built_copy / "models/tiny/base", "phi-lab", "3", registry="azureml")
    add_hostile_blob(state, "models/phi-lab/3", name, "written by a stranger")
    asset = "azureml://registries/azureml/models/phi-lab/versions/3"
    edit_params(built_copy, "  source: synthetic   #", f"  source: azureml\n  asset: {asset}\n  #")
    before = (built_copy / "models/tiny/base.dvc").read_text()
    run = doit(built_copy, env=azure_env(state))
    assert run.returncode == 1 and run.failed == ["base"] and run.ran == [], run.output
    assert f"blob models/phi-lab/3/{name} under models/phi-lab/3/" in run.output
    assert "would be written outside" in run.output
    assert not list(tmp_path.rglob("escaped.txt")) and not Path("/escaped.txt").exists()
    assert (built_copy / "models/tiny/base.dvc").read_text() == before  # the previous base is kept


def test_a_hub_file_named_outside_its_folder_is_refused(built_copy):
    extra = {"../../escaped.json": b"{}"}
    with FakeHub("lab/tiny-phi3", built_copy / "models/tiny/base", extra=extra) as hub:
        edit_params(built_copy, "source: synthetic ", "source: hf\n  model_id: lab/tiny-phi3\n ")
        run = doit(built_copy, env={"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(built_copy / ".hf")})
    assert run.returncode == 1 and run.failed == ["base"], run.output
    assert "hub file of lab/tiny-phi3: '../../escaped.json' would be written outside" in run.output
    assert not any("resolve" in r for r in hub.requests)  # refused before any file was fetched
    assert not list(built_copy.parent.rglob("escaped.json"))


def _entries(project: Path, dvc_file: str) -> list[Path]:
    """The run-cache entry files recorded for an artifact: those whose output is its content hash
    (a downstream stage's entry names that hash too, among its inputs)."""
    md5 = yaml.safe_load((project / dvc_file).read_text())["outs"][0]["md5"]
    entries = (project / ".dvc/cache/runs").glob("*/*/*")
    return [p for p in entries if yaml.safe_load(p.read_text())["outs"][0]["md5"] == md5]


def test_a_run_cache_entry_restores_only_into_its_stage_folder(built_copy):
    """An entry whose fingerprint matches but whose `path` names another folder is not used: smoke
    is rebuilt where it belongs and nothing appears where the entry pointed."""
    for entry in _entries(built_copy, "models/tiny/smoke/travel.dvc"):
        doc = yaml.safe_load(entry.read_text())
        doc["outs"][0]["path"] = "models/tiny/../../elsewhere"
        entry.chmod(0o644)
        entry.write_text(yaml.safe_dump(doc, sort_keys=False))
    (built_copy / "models/tiny/smoke/travel.dvc").unlink()
    run = doit(built_copy)
    assert run.returncode == 0 and (run.ran, run.restored) == (["smoke:travel"], []), run.output
    assert not (built_copy.parent / "elsewhere").exists() and not (built_copy / "elsewhere").exists()


def test_a_cached_onnx_folder_that_loads_an_outside_library_is_rebuilt(built_copy):
    """A run-cache entry (as a remote could hand out) for export's exact inputs, whose
    genai_config.json loads a custom-ops library from elsewhere: refused, export rebuilt."""
    from dvc.repo import Repo

    model = built_copy / "models/tiny/onnx-ao/model"
    dvc_file = built_copy / "models/tiny/onnx-ao/model.dvc"
    entry = _entries(built_copy, "models/tiny/onnx-ao/model.dvc")[0]
    config = json.loads((model / "genai_config.json").read_text())
    config["model"]["decoder"]["session_options"]["custom_ops_library"] = "/tmp/not-ours.so"
    (model / "genai_config.json").unlink()  # a hard link into the cache: replace, never edit
    (model / "genai_config.json").write_text(json.dumps(config))
    with Repo(str(built_copy)) as repo:
        repo.add(str(model))  # its objects into the cache, as a pull from a remote would bring them
    doc = yaml.safe_load(entry.read_text())
    doc["outs"][0] = yaml.safe_load(dvc_file.read_text())["outs"][0] | {"path": doc["outs"][0]["path"]}
    entry.with_name("hostile").write_text(yaml.safe_dump(doc, sort_keys=False))  # the newest entry
    dvc_file.unlink()  # no version in place: the run-cache decides
    run = doit(built_copy)
    assert run.returncode == 0 and run.ran == ["export"] and run.restored == [], run.output
    said = " ".join(run.output.split())  # the console wraps long lines
    assert "custom_ops_library points at '/tmp/not-ours.so', outside the model folder: refused" in said
    assert "custom_ops_library" not in (model / "genai_config.json").read_text()


def _cache_object(project: Path, data: bytes, suffix: str = "") -> str:
    """Put `data` in the project's DVC cache under its true md5 (as a pull from a remote would)."""
    import hashlib

    md5 = hashlib.md5(data).hexdigest()
    path = project / ".dvc/cache/files/md5" / md5[:2] / (md5[2:] + suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return md5 + suffix


def _hostile_entry(project: Path, dvc_file: str, out: dict) -> None:
    """A run-cache entry for the artifact's exact fingerprint, newer than the genuine one, whose
    out is `out` (with the genuine `path`), and the artifact's .dvc file gone: the entries decide."""
    entry = _entries(project, dvc_file)[0]
    doc = yaml.safe_load(entry.read_text())
    doc["outs"][0] = out | {"path": doc["outs"][0]["path"]}
    entry.with_name("hostile").write_text(yaml.safe_dump(doc, sort_keys=False))
    (project / dvc_file).unlink()


@pytest.mark.parametrize("relpath", ["../../../escaped.txt", "/tmp/escaped-abs.txt", "a/./answers.json"])
def test_a_manifest_naming_a_file_outside_its_folder_is_refused_before_anything_is_written(built_copy, relpath):
    """A run-cache entry names a manifest (DVC's `.dir` object, intact by its hash) listing a file
    whose name leaves the folder: refused before checkout; the genuine build comes back instead."""
    obj = _cache_object(built_copy, b"written by a stranger\n")
    manifest = _cache_object(built_copy, json.dumps([{"md5": obj, "relpath": relpath}]).encode(), ".dir")
    _hostile_entry(built_copy, "models/tiny/smoke/travel.dvc", {"md5": manifest, "size": 22, "nfiles": 1})
    run = doit(built_copy)
    assert run.returncode == 0 and (run.ran, run.restored) == ([], ["smoke:travel"]), run.output
    said = " ".join(run.output.split())
    assert f"version {manifest[:8]} its manifest names the file {relpath!r}, which leaves the folder: refused" in said
    assert not list(built_copy.parent.rglob("escaped.txt")) and not Path("/tmp/escaped-abs.txt").exists()
    assert yaml.safe_load((built_copy / "models/tiny/smoke/travel.dvc").read_text())["outs"][0]["md5"] != manifest


def test_a_run_cache_entry_gives_a_dvc_file_its_hash_fields_only(built_copy):
    """An entry's out carrying other keys (cache: false, a remote, push: false) restores the build
    with the hash fields alone: DVC is never told by an entry how to treat the output."""
    genuine = yaml.safe_load((built_copy / "models/tiny/smoke/travel.dvc").read_text())["outs"][0]
    extra = {"cache": False, "remote": "elsewhere", "push": False, "persist": True}
    _hostile_entry(built_copy, "models/tiny/smoke/travel.dvc", genuine | extra)
    run = doit(built_copy)
    assert run.returncode == 0 and (run.ran, run.restored) == ([], ["smoke:travel"]), run.output
    out = yaml.safe_load((built_copy / "models/tiny/smoke/travel.dvc").read_text())["outs"][0]
    assert set(out) <= {"md5", "size", "nfiles", "hash", "path"} and out["md5"] == genuine["md5"]
