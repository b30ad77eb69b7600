"""The benchmark scripts still run (tiny sizes): they are not part of the suite's figures,
but a script that no longer starts measures nothing.  Each must exit 0 and print its
figures; the values themselves are not judged here (bench/README.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("script, args, expect", [
    ("submit.py", ["--messages", "20", "--connections", "2", "--size", "2048"], "msg/s"),
    ("pipeline.py", ["--messages", "20", "--threads", "2", "--size", "2048"], "ms CPU/msg"),
    ("imap.py", ["--messages", "50", "--select-messages", "200", "--idle-connections", "5", "--size", "2048"],
     "SELECT"),
])
def test_bench_script_runs_and_prints_figures(script: str, args: list[str], expect: str) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert expect in done.stdout, done.stdout[-3000:]
