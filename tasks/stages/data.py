"""data: one adapter's JSON-lines Q&A file validated, duplicate pairs dropped, split train/eval by prompt."""

from __future__ import annotations

import json
from pathlib import Path

from tasks.engine.stage import Stage


def source_file(params, paths) -> dict:
    """The adapter's raw data file is an input from outside the build (its content is in the fingerprint)."""
    return {"data_file": paths.inside(params.adapters[paths.adapter].data, f"adapters.{paths.adapter}.data")}


STAGE = Stage(
    name="data",
    module=__name__,
    doc="Validate an adapter's Q&A data set, drop duplicates, split train/eval by prompt",
    output="data/prepared/{name}/{adapter}",
    params=("data",),
    external_inputs=source_file,
)


def run(params, paths, out: Path, channel) -> dict:
    from tasks.errors import StageError
    from tasks.ml.jsonl import write_jsonl
    from tasks.ml.qa_data import DataError, dedupe, parse_records, split_by_prompt

    key, rel = f"adapters.{paths.adapter}.data", params.adapters[paths.adapter].data
    source = paths.inside(rel, key)
    if not source.is_file():
        raise StageError(f"params.yaml: {key}: {rel} does not exist")
    try:
        records, blank = parse_records(source)
        unique = dedupe(records)
        train, evals = split_by_prompt(unique, params.data.eval_fraction, params.data.seed)
    except DataError as exc:
        raise StageError(str(exc)) from None
    write_jsonl(out / "train.jsonl", train)
    write_jsonl(out / "eval.jsonl", evals)
    stats = {
        "source": rel,
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
        channel.table(f"{rel} (first {len(head)})", ["prompt", "response"], head)
    return stats
