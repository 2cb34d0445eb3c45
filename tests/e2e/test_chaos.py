"""The chaos suite's short profile (bench/chaos.py --profile ci): faults at random points of a
tunnel's life under a steady client load; after every one the Service has its own selector, no
tunnel object, annotation or hosts entry is left, and a request in flight at Ctrl-C completes
(the suite stops if one is lost). Outage durations are reported, not asserted: speed belongs to
the benchmark, and docs/performance.md has the measured figures."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(900)
def test_chaos_ci_profile_leaves_nothing_behind() -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "chaos.py"), "--profile", "ci", "--seed", "7"],
        capture_output=True, text=True, timeout=900, check=False, cwd=ROOT,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = re.search(r"^RESULT trials=(\d+) selectors_lost=(\d+) leftovers=(\d+) "
                       r"failed_requests=(\d+) worst_outage_ms=(\d+)$", run.stdout, re.M)
    assert result is not None, run.stdout[-3000:]
    trials, selectors_lost, leftovers = (int(result.group(i)) for i in (1, 2, 3))
    assert trials == 6, run.stdout
    assert selectors_lost == 0, run.stdout
    assert leftovers == 0, run.stdout
