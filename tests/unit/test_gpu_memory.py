"""benchmarks/gpu_memory.py: each stage's peak from nvidia-smi's samples and the stage logs' times
(run on GPU machines only, where a parsing error would cost a build's device time)."""

from __future__ import annotations

from benchmarks.gpu_memory import stage_peaks


def test_each_stage_gets_the_peak_of_the_samples_taken_while_it_ran(tmp_path):
    samples = [("10:00:00", 100), ("10:00:01", 900), ("10:00:02", 300), ("10:00:05", 700), ("10:00:09", 5000)]
    (tmp_path / "memory.csv").write_text("".join(f"2026/12/06 {t}.250, {mib}\n" for t, mib in samples))
    logs = tmp_path / "logs"
    logs.mkdir()
    # Untimed lines (a progress bar, a number first) between the stage's first and last stamp.
    (logs / "quantize.log").write_text(
        "2026-12-06 10:00:00,100 tasks: stage quantize: started\n"
        "100%|##########| 3/3\n12 layers\n"
        "2026-12-06 10:00:01,900 tasks: stage quantize: done\n"
    )
    (logs / "export.log").write_text("2026-12-06 10:00:04,000 started\n2026-12-06 10:00:06,000 done\n")
    (logs / "empty.log").write_text("no timestamps here\n")
    assert stage_peaks(tmp_path / "memory.csv", logs) == {"quantize": 900, "export": 700}
