"""Q&A data sets: JSON-lines records of {prompt, response}, checked line by line, deduplicated and
split into train and eval by prompt (the data stage prepares each adapter's file; quantize takes the
train split of its calibration files the same way)."""

from __future__ import annotations

import json
import random
from pathlib import Path


class DataError(ValueError):
    """A bad record; the message names the file and line."""


def parse_records(path: Path) -> tuple[list[dict], int]:
    """Read `path`, one JSON object a line; return the records and the number of blank lines.

    A UTF-8 BOM and CRLF line ends (the lab's file) are accepted; extra keys are ignored.
    """
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    records, blank = [], 0
    for number, line in enumerate(raw.split(b"\n"), start=1):
        line = line.rstrip(b"\r")
        if not line.strip():
            blank += 1
            continue
        records.append(_parse_line(path, number, line))
    if not records:
        raise DataError(f"{path}: no records (the file is empty)")
    return records, blank


def _parse_line(path: Path, number: int, line: bytes) -> dict:
    where = f"{path}:{number}"
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{where}: not valid UTF-8 (byte {exc.start + 1})") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not valid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(value, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(value).__name__}")
    for key in ("prompt", "response"):
        if key not in value:
            raise DataError(f"{where}: missing key '{key}'")
        if not isinstance(value[key], str):
            raise DataError(f"{where}: '{key}' must be a string, got {type(value[key]).__name__}")
        if not value[key].strip():
            raise DataError(f"{where}: '{key}' is empty")
    return {"prompt": value["prompt"], "response": value["response"]}


def dedupe(records: list[dict]) -> list[dict]:
    """Drop exact duplicate (prompt, response) pairs, keeping the first occurrence."""
    seen, unique = set(), []
    for rec in records:
        key = (rec["prompt"], rec["response"])
        if key not in seen:
            seen.add(key)
            unique.append(rec)
    return unique


def split_by_prompt(records: list[dict], eval_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Hold out a seeded share of distinct prompts, so no eval prompt appears in train."""
    prompts = sorted({r["prompt"] for r in records})
    if len(prompts) < 2:
        raise DataError(f"need at least 2 distinct prompts to split train/eval, found {len(prompts)}")
    random.Random(seed).shuffle(prompts)
    n_eval = min(len(prompts) - 1, max(1, round(len(prompts) * eval_fraction)))
    held_out = set(prompts[:n_eval])
    train = [r for r in records if r["prompt"] not in held_out]
    evals = [r for r in records if r["prompt"] in held_out]
    return train, evals


def train_split(path: Path, eval_fraction: float, seed: int) -> list[dict]:
    """The records of a data file that its prepared train split holds."""
    return split_by_prompt(dedupe(parse_records(path)[0]), eval_fraction, seed)[0]


def calibration_inputs(paths, files: list[str]) -> dict[str, Path]:
    """The calibration data files (params: quantize.calibration, default the first adapter's) as a
    stage's inputs from outside the build: their content is in its fingerprint."""
    return {f"calibration_{i}": paths.inside(rel, "quantize.calibration") for i, rel in enumerate(files)}


def calibration_records(paths, files: list[str], eval_fraction: float, seed: int) -> list[dict]:
    """The train split of each calibration file (split as the data stage splits it, so no eval
    record is seen); several files are interleaved, so the first records mix them all."""
    from itertools import chain, zip_longest

    from tasks.errors import StageError

    splits = []
    for path in calibration_inputs(paths, files).values():
        if not path.is_file():
            raise StageError(f"params.yaml: quantize.calibration: {path} does not exist")
        try:
            splits.append(train_split(path, eval_fraction, seed))
        except DataError as exc:
            raise StageError(f"quantize.calibration: {exc}") from None
    return [r for r in chain.from_iterable(zip_longest(*splits)) if r is not None]
