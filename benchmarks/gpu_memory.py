"""Peak GPU memory during a build and while each stage ran: nvidia-smi's per-second samples against
the stage logs.

The CSV is `nvidia-smi --query-gpu=timestamp,memory.used --format=csv,noheader,nounits -l 1` written
during a build (benchmarks/lab_h200.sh build); each stage's log (logs/<stage>.log) starts with its
"started" line and ends with its "done" line, both timestamped by the stage process.

Usage: python benchmarks/gpu_memory.py GPU_MEMORY_CSV LOG_FOLDER
"""

from __future__ import annotations

import csv
import sys
from datetime import datetime, timedelta
from pathlib import Path


def samples(csv_file: Path) -> list[tuple[datetime, int]]:
    rows = csv.reader(csv_file.read_text().splitlines())
    return [(datetime.strptime(r[0].strip(), "%Y/%m/%d %H:%M:%S.%f"), int(r[1])) for r in rows if len(r) > 1]


def _stamp(line: str) -> datetime | None:
    try:
        return datetime.fromisoformat(line[:19]) if line[:4].isdigit() else None
    except ValueError:
        return None


def stage_span(log: Path) -> tuple[datetime, datetime] | None:
    """The first and last timestamped lines of a stage log (second resolution, as the samples)."""
    stamps = [t for t in map(_stamp, log.read_text(errors="replace").splitlines()) if t]
    return (stamps[0], stamps[-1]) if stamps else None


def stage_peaks(csv_file: Path, logs: Path) -> dict[str, int]:
    """MiB at most while each stage ran (a sample up to a second after its last line counts)."""
    found = samples(csv_file)
    peaks = {}
    for log in sorted(logs.glob("*.log")):
        span = stage_span(log)
        if span:
            start, end = span[0], span[1] + timedelta(seconds=1)
            peaks[log.stem] = max((mib for t, mib in found if start <= t <= end), default=0)
    return peaks


def main() -> None:
    csv_file, logs = Path(sys.argv[1]), Path(sys.argv[2])
    sys.stdout.write(f"peak GPU memory during the build: {max(mib for _, mib in samples(csv_file))} MiB\n")
    for stage, mib in sorted(stage_peaks(csv_file, logs).items(), key=lambda kv: -kv[1]):
        sys.stdout.write(f"{stage:24s} {mib:6d} MiB\n")


if __name__ == "__main__":
    main()
