"""The data stage's pure parts: parsing with clear errors, de-duplication, the split by prompt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.ml.qa_data import DataError, dedupe, parse_records, split_by_prompt

ROOT = Path(__file__).resolve().parents[2]
GOOD = '{"prompt": "Best museum in Paris?", "response": "The Louvre."}'


def _file(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "d.jsonl"
    path.write_bytes(data)
    return path


def test_lab_file_parses_with_crlf_and_has_duplicates():
    records, blank = parse_records(ROOT / "data" / "data_sample_travel.jsonl")
    assert b"\r\n" in (ROOT / "data" / "data_sample_travel.jsonl").read_bytes()
    assert len(records) == 289 and blank == 0  # the last line has no line end
    assert len(dedupe(records)) < len(records)
    assert not any(r["prompt"].endswith("\r") or r["response"].endswith("\r") for r in records)


def test_bom_blank_lines_and_extra_keys_are_accepted(tmp_path):
    extra = '{"prompt": "Where?", "response": "Here.", "source": "lab"}'
    records, blank = parse_records(_file(tmp_path, b"\xef\xbb\xbf" + f"{GOOD}\r\n\r\n{extra}\r\n".encode()))
    assert records == [
        {"prompt": "Best museum in Paris?", "response": "The Louvre."},
        {"prompt": "Where?", "response": "Here."},
    ]
    assert blank == 2  # the empty line and the end of the file


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"{not json", ":2: not valid JSON"),
        (b"[1, 2]", ":2: expected a JSON object, got list"),
        (b'{"prompt": "a"}', ":2: missing key 'response'"),
        (b'{"prompt": 3, "response": "b"}', ":2: 'prompt' must be a string, got int"),
        (b'{"prompt": "  ", "response": "b"}', ":2: 'prompt' is empty"),
        (b'{"prompt": "caf\xe9", "response": "b"}', ":2: not valid UTF-8"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, line, message):
    path = _file(tmp_path, GOOD.encode() + b"\n" + line + b"\n")
    with pytest.raises(DataError) as err:
        parse_records(path)
    assert str(err.value).startswith(f"{path}:2: ") and message in str(err.value)


def test_empty_file(tmp_path):
    with pytest.raises(DataError, match="no records"):
        parse_records(_file(tmp_path, b"\n\n"))


def test_very_long_line_is_read(tmp_path):
    long = json.dumps({"prompt": "p", "response": "x" * 1_000_000})
    records, _ = parse_records(_file(tmp_path, long.encode() + b"\n"))
    assert len(records[0]["response"]) == 1_000_000


def test_only_duplicates_cannot_be_split():
    records = dedupe([{"prompt": "a", "response": "b"}] * 5)
    with pytest.raises(DataError, match="at least 2 distinct prompts"):
        split_by_prompt(records, 0.1, seed=0)


def test_split_keeps_eval_prompts_out_of_train_and_is_seeded():
    records = dedupe(parse_records(ROOT / "data" / "data_sample_travel.jsonl")[0])
    train, evals = split_by_prompt(records, 0.1, seed=42)
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in evals}
    assert len(train) + len(evals) == len(records) and evals
    assert split_by_prompt(records, 0.1, seed=42) == (train, evals)
    assert split_by_prompt(records, 0.1, seed=7) != (train, evals)
