"""Reading params.yaml: its YAML, validated by the schema (tasks/params.py), every error naming the
file and the key, with the closest valid key for an unknown one."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from tasks.errors import ParamsError
from tasks.params import Params


def _suggest(error: dict, model: type[BaseModel]) -> str:
    """For an unknown key, the closest valid key of the same section."""
    fields = model
    for part in error["loc"][:-1]:
        if isinstance(fields, type) and issubclass(fields, BaseModel):
            info = fields.model_fields.get(str(part))
            fields = info.annotation if info else None
        else:  # a mapping's key (adapters.<name>): its values' model
            fields = get_args(fields)[1] if get_origin(fields) is dict else None
    if not (isinstance(fields, type) and issubclass(fields, BaseModel)):
        return ""
    close = difflib.get_close_matches(str(error["loc"][-1]), list(fields.model_fields), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def format_errors(path: Path, exc: ValidationError) -> str:
    lines = [f"{path}: invalid params"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key{_suggest(err, Params)}")
        else:
            lines.append(f"  {key}: {err['msg']}")
    return "\n".join(lines)


def load_params(path: Path, content: bytes | None = None) -> Params:
    """Read and validate params.yaml (or `content`, its bytes as already read); raise ParamsError
    naming the file and every bad key."""
    try:
        raw = yaml.safe_load((path.read_bytes() if content is None else content).decode("utf-8")) or {}
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found") from None
    except UnicodeDecodeError as exc:
        raise ParamsError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError(format_errors(path, exc)) from None
