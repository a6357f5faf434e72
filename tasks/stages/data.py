"""data: validate the JSON-lines Q&A file, drop duplicate pairs, split train/eval by prompt."""

from __future__ import annotations

import json
import random
from pathlib import Path

from tasks.build.stage import Stage


def source_file(params, paths) -> dict:
    """The raw data file is an input from outside the build (its content is in the fingerprint)."""
    return {"data_file": paths.inside(params.data.path, "data.path")}


STAGE = Stage(
    name="data",
    module=__name__,
    doc="Validate the Q&A data set, drop duplicates, split train/eval by prompt",
    output="data/prepared",
    params=("data",),
    external_inputs=source_file,
)


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


def run(params, paths, out: Path, channel) -> dict:
    from tasks.errors import StageError
    from tasks.ml.jsonl import write_jsonl

    source = paths.inside(params.data.path, "data.path")
    if not source.is_file():
        raise StageError(f"params.yaml: data.path: {params.data.path} does not exist")
    try:
        records, blank = parse_records(source)
        unique = dedupe(records)
        train, evals = split_by_prompt(unique, params.data.eval_fraction, params.data.seed)
    except DataError as exc:
        raise StageError(str(exc)) from None
    write_jsonl(out / "train.jsonl", train)
    write_jsonl(out / "eval.jsonl", evals)
    stats = {
        "source": params.data.path,
        "records": len(records),
        "blank_lines": blank,
        "duplicates_dropped": len(records) - len(unique),
        "train": len(train),
        "eval": len(evals),
        "eval_prompts": len({r["prompt"] for r in evals}),
    }
    (out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    head = [[r["prompt"], r["response"]] for r in unique[: params.data.head]]
    if head:
        channel.table(f"{params.data.path} (first {len(head)})", ["prompt", "response"], head)
    return stats
