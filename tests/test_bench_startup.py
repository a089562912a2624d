"""tools/bench_startup.py's pure helpers on fixed inputs: cachegrind's "I refs" line, the
order-statistic interval of a median, the paired differences, the error-document check, the
masking of passwords in messages and the printed row. No timing is asserted: the tool prints
figures, this only checks how it computes and reads them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import bench_startup  # noqa: E402 - tools/ on the path first

CACHEGRIND_LOG = """\
==7457== Cachegrind, a cache and branch-prediction profiler
==7457== Copyright (C) 2002-2017, and GNU GPL'd, by Nicholas Nethercote et al.
==7457== Using Valgrind-3.19.0 and LibVEX; rerun with -h for copyright info
==7457== Command: /work/build/bench-venv-3.13/bin/prtg-roundtrip --help
==7457== Parent PID: 7456
==7457==
--7457-- warning: L3 cache found, using its data for the LL simulation.
--7457-- warning: specified LL cache: line_size 64  assoc 1  total_size 335,544,320
==7457==
==7457== I   refs:      464,015,614
"""


def test_instruction_refs_parsed() -> None:
    assert bench_startup.parse_instruction_refs(CACHEGRIND_LOG) == 464_015_614
    assert bench_startup.parse_instruction_refs("==1== I   refs:      314,756,503\n") == 314_756_503
    # a small count has no comma; the program's own output mixed in does not confuse it
    assert bench_startup.parse_instruction_refs("usage: x\n==22== I refs: 999\nI refs: 5\n") == 999


def test_instruction_refs_missing() -> None:
    assert bench_startup.parse_instruction_refs("") is None
    # the numbers of the LL cache lines are no instruction count; nor is a line of the program's own
    assert bench_startup.parse_instruction_refs(CACHEGRIND_LOG.rsplit("==7457== I", 1)[0]) is None
    assert bench_startup.parse_instruction_refs("I   refs:      12,345\n") is None


@pytest.mark.parametrize("n, low_rank, high_rank", [
    # 1-based ranks n/2 - 1.96*sqrt(n)/2 and 1 + n/2 + 1.96*sqrt(n)/2, rounded: the usual table values
    (15, 4, 12),
    (21, 6, 16),
    (41, 14, 28),
    (100, 40, 61),
])
def test_median_interval_ranks(n: int, low_rank: int, high_rank: int) -> None:
    values = [float(v) for v in range(1, n + 1)]
    shuffled = values[::2] + values[1::2]  # the order given does not matter
    median, low, high = bench_startup.median_interval(shuffled)
    assert median == pytest.approx((n + 1) / 2)
    assert (low, high) == (low_rank, high_rank)


def test_median_interval_few_values_whole_range() -> None:
    assert bench_startup.median_interval([3.0, -1.0, 2.0]) == (2.0, -1.0, 3.0)
    assert bench_startup.median_interval([7.0]) == (7.0, 7.0, 7.0)
    with pytest.raises(ValueError):
        bench_startup.median_interval([])


def test_paired_differences() -> None:
    assert bench_startup.paired_differences([10.0, 12.0, 9.0], [8.0, 13.0, 9.0]) == [2.0, -1.0, 0.0]
    with pytest.raises(ValueError):
        bench_startup.paired_differences([1.0], [1.0, 2.0])


def test_prtg_error() -> None:
    assert bench_startup.prtg_error(json.dumps({"prtg": {"error": 1, "text": "IMAP: refused"}}).encode()) \
        == "IMAP: refused"
    ok = {"prtg": {"result": [{"channel": "Round trip", "value": 1}], "text": "OK"}}
    assert bench_startup.prtg_error(json.dumps(ok).encode()) is None
    assert bench_startup.prtg_error(json.dumps({"prtg": {"error": 0, "text": "x"}}).encode()) is None
    assert bench_startup.prtg_error(b"usage: prtg-roundtrip [-h]") is None
    assert bench_startup.prtg_error(b"[1, 2]") is None


def test_shown_masks_passwords() -> None:
    text = bench_startup.shown(["python", "-m", "prtg_roundtrip", "--imap-password", "s3cret", "--imap-user", "u"])
    assert "s3cret" not in text
    assert text == "python -m prtg_roundtrip --imap-password *** --imap-user u"


def test_format_row() -> None:
    fig = {
        "wall_ms": {"median": 80.0, "min": 75.5, "max": 99.0},
        "cpu_ms": {"median": 78.25},
        "cpu_diff_ms": {"median": 2.5, "low": -1.0, "high": 4.0},
        "instructions": {"median": 339_100_000, "min": 339_000_000, "max": 339_200_000,
                         "diff": 24_300_000, "diff_percent": 7.72},
    }
    row = bench_startup.format_row("help", "pyz", fig)
    assert row.split() == ["help", "pyz", "80.0", "(75.5-99.0)", "78.2", "+2.5", "[-1.0,", "+4.0]",
                           "339.1", "(339.0-339.2)", "+24.3", "M", "(+7.72", "%)"]
    reference = dict(fig, cpu_diff_ms=None, instructions=dict(fig["instructions"], diff=0, diff_percent=0.0))
    assert bench_startup.format_row("help", "installed", reference).split()[-1] == "(339.0-339.2)"
    assert "[" not in bench_startup.format_row("help", "installed", dict(reference, instructions=None))
