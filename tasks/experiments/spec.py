"""What a sweep compares: overrides in DVC's and Hydra's grammar (`-S finetune.lora_r=8,16,64`,
`-S quantize.q_group_size=range(32,129,32)`) or a sweep file, made into trials (the grid, or
`--sample N` of it), each checked against the params schema before anything runs.

A trial is the params file with a few keys set otherwise; its name says which
(`r16-lr2e-4`), so it reads the same in every table and on the command line.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import random
import re
from dataclasses import dataclass

import yaml

from tasks.errors import ParamsError

SWEEPS = "params/sweeps"  # sweep files worth keeping: params/sweeps/<name>.yaml
MAX_TRIALS = 32  # more asks for --sample N or --yes
# Short names of keys in trial names; any other key is named by its last part.
SHORT = {
    "lora_r": "r",
    "learning_rate": "lr",
    "lora_alpha": "alpha",
    "lora_dropout": "drop",
    "q_group_size": "g",
    "max_steps": "steps",
    "max_calib_samples": "calib",
    "max_seq_len": "seq",
    "calibration": "cal",
}
NOT_SWEPT = ("name", "azure", "registry", "jobs", "gates")  # no artifact depends on them


@dataclass(frozen=True)
class Trial:
    name: str
    overrides: dict  # dotted key: value


def _split(text: str) -> list[str]:
    """`a,b,[c,d]` -> ['a', 'b', '[c,d]']: commas inside brackets or quotes do not split."""
    parts, depth, quote, current = [], 0, None, ""
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += char
    return [*parts, current]


def _scalar(text: str):
    """A value as YAML reads it, with `1e-4` a number (YAML 1.1 wants `1.0e-4`)."""
    value = yaml.safe_load(text) if text.strip() else None
    if isinstance(value, str):
        try:
            return float(value) if re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+", value.strip()) else value
        except ValueError:
            return value
    return value


def _range(args: str, option: str) -> list:
    try:
        numbers = [_scalar(a) for a in args.split(",")]
        if not (1 <= len(numbers) <= 3) or not all(isinstance(n, (int, float)) for n in numbers):
            raise ValueError
    except (ValueError, yaml.YAMLError):
        raise ParamsError(f"-S {option}: range() takes 1 to 3 numbers: range(start, stop[, step])") from None
    start, stop, step = {1: lambda: (0, numbers[0], 1), 2: lambda: (*numbers, 1), 3: lambda: tuple(numbers)}[
        len(numbers)
    ]()
    if step == 0:
        raise ParamsError(f"-S {option}: range() step must not be 0")
    count = max(0, -(-(stop - start) // step))  # ceil((stop - start) / step)
    return [
        round(start + i * step, 12) if isinstance(step + start, float) else start + i * step for i in range(int(count))
    ]


def parse_override(option: str) -> tuple[str, list]:
    """`key=a,b,c` or `key=range(start,stop[,step])` -> (key, values)."""
    key, sep, text = option.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ParamsError(f"-S {option}: expected key=value[,value...] (e.g. finetune.lora_r=8,16)")
    found = re.fullmatch(r"\s*range\((.*)\)\s*", text)
    try:
        values = _range(found.group(1), option) if found else [_scalar(v) for v in _split(text)]
    except yaml.YAMLError as exc:
        raise ParamsError(f"-S {option}: a value is not YAML ({exc.problem})") from None
    if not values or (not found and text.strip() == ""):
        raise ParamsError(f"-S {option}: no values (an empty range?)")
    unique = {yaml.safe_dump(v): v for v in values}  # `8,8`: one trial; lists and mappings too
    return key, list(unique.values())


def read_sweep_file(path, text: str) -> dict:
    """A sweep file: `params: {key: [values] | "a,b" | "range(...)"}`, optional `sample`, `seed`."""
    doc = yaml.safe_load(text) or {}
    if not isinstance(doc, dict) or not isinstance(doc.get("params"), dict) or not doc["params"]:
        raise ParamsError(f"{path}: expected `params:` mapping each key to its values")
    extra = sorted(set(doc) - {"params", "sample", "seed", "description"})
    if extra:
        raise ParamsError(f"{path}: unknown key {extra[0]!r} (known: params, sample, seed, description)")
    grid = {}
    for key, values in doc["params"].items():
        if isinstance(values, list):
            grid[str(key)] = values
        else:
            grid.update([parse_override(f"{key}={values}")])
    return {"grid": grid, "sample": doc.get("sample"), "seed": doc.get("seed", 0)}


def _set(raw: dict, key: str, value, params_path) -> None:
    """Set a dotted key in the raw params; a key the schema lacks is left to its error."""
    parts = key.split(".")
    if parts[0] in NOT_SWEPT:
        raise ParamsError(f"-S {key}: {parts[0]} is not swept (no artifact depends on it)")
    node = raw
    for i, part in enumerate(parts[:-1]):
        if parts[0] == "adapters" and i == 1 and part not in node.get("adapters", node):
            known = list(raw.get("adapters") or {})
            close = difflib.get_close_matches(part, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ParamsError(f"-S {key}: {params_path} has no adapter {part!r}{hint}; adapters: {', '.join(known)}")
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ParamsError(f"-S {key}: {'.'.join(parts[: i + 1])} is a value, not a section")
        node = child
    node[parts[-1]] = value


def trial_params(raw: dict, overrides: dict, params_path, what: str):
    """The validated Params of the raw params file with these overrides; a key the schema lacks
    or a value it refuses names the option and the rule."""
    from pydantic import ValidationError

    from tasks.params import Params
    from tasks.params_file import format_errors

    doc = copy.deepcopy(raw)
    for key, value in overrides.items():
        _set(doc, key, value, params_path)
    try:
        return Params.model_validate(doc)
    except ValidationError as exc:
        lines = format_errors(params_path, exc).splitlines()[1:]
        raise ParamsError(f"{what}: refused by the params schema:\n" + "\n".join(lines)) from None


def _label(value, index: int) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        text = f"{value:.0e}" if 0 < abs(value) < 1e-2 else f"{value:g}"
        return re.sub(r"e([-+])0*(\d)", lambda m: f"e{'-' if m.group(1) == '-' else ''}{m.group(2)}", text)
    text = str(value)
    return text if re.fullmatch(r"[A-Za-z0-9._+-]{1,16}", text) else str(index)


def _short_names(keys: list[str]) -> dict[str, str]:
    """The name each swept key goes by in trial names: its short form, unless two keys share it."""
    short = {key: SHORT.get(key.split(".")[-1], key.split(".")[-1]) for key in keys}
    taken = [s for s in short.values()]
    return {k: (s if taken.count(s) == 1 else k.replace(".", "_")) for k, s in short.items()}


def make_trials(grid: dict[str, list], sample: int | None, seed: int) -> list[Trial]:
    """Every combination of the grid (keys in the order given), or `sample` of them drawn with
    `seed`, each named by the swept keys' values: `r16-lr2e-4`."""
    keys = list(grid)
    combos = list(itertools.product(*(grid[k] for k in keys)))
    if sample is not None:
        if sample < 1:
            raise ParamsError(f"--sample {sample}: draw at least one trial")
        picked = sorted(random.Random(seed).sample(range(len(combos)), min(sample, len(combos))))
        combos = [combos[i] for i in picked]
    short = _short_names([k for k in keys if len(grid[k]) > 1] or keys)
    trials = []
    for combo in combos:
        parts = [f"{short[k]}{_label(v, grid[k].index(v))}" for k, v in zip(keys, combo, strict=True) if k in short]
        trials.append(Trial("-".join(parts), dict(zip(keys, combo, strict=True))))
    return trials


def sweep_name(grid: dict) -> str:
    """A sweep's default name: its swept keys' short names (`lora_r-learning_rate`)."""
    return "-".join(key.split(".")[-1] for key in grid)
