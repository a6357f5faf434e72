"""CUDA graphs in a CUDA export's genai_config: on where onnxruntime can capture the graph, off (with
the reason) where the graph has control-flow nodes. Found on the H200: the Phi-3.5 shape's LongRoPE
If node made every CUDA session refuse graph capture, so smoke failed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.params import ExportParams
from tasks.stages.export import cuda_graphs


def _model_folder(tmp_path: Path, with_if: bool) -> Path:
    """A model.onnx holding an Identity (and an If, if asked) and a genai_config asking for graphs."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    nodes = [helper.make_node("Identity", ["x"], ["y"])]
    if with_if:
        branch = helper.make_graph([helper.make_node("Identity", ["x"], ["z"])], "b", [], [y])
        flag = helper.make_tensor_value_info("flag", TensorProto.BOOL, [])
        nodes.append(helper.make_node("If", ["flag"], ["w"], then_branch=branch, else_branch=branch))
    inputs = [x, flag] if with_if else [x]
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", inputs, [y])), tmp_path / "model.onnx")
    options = [{"cuda": {"enable_cuda_graph": "1"}}]
    config = {"model": {"decoder": {"session_options": {"provider_options": options}}}}
    (tmp_path / "genai_config.json").write_text(json.dumps(config))
    return tmp_path


def _graphs_setting(folder: Path) -> str:
    config = json.loads((folder / "genai_config.json").read_text())
    return config["model"]["decoder"]["session_options"]["provider_options"][0]["cuda"]["enable_cuda_graph"]


@pytest.mark.parametrize(("with_if", "said", "setting"), [(False, "on", "1"), (True, "off: the graph has If", "0")])
def test_graphs_stay_on_only_where_they_can_be_captured(tmp_path, with_if, said, setting):
    folder = _model_folder(tmp_path, with_if)
    assert cuda_graphs(folder, ExportParams(device="cuda", cuda_graph=True)).startswith(said)
    assert _graphs_setting(folder) == setting


def test_graphs_are_not_mentioned_when_not_asked_for(tmp_path):
    folder = _model_folder(tmp_path, with_if=True)
    assert cuda_graphs(folder, ExportParams(device="cuda", cuda_graph=False)) is None
    assert cuda_graphs(folder, ExportParams(device="cpu")) is None
    assert _graphs_setting(folder) == "1"  # the builder's own choice, untouched
