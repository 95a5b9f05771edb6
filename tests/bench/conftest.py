"""Makes the bench suites' modules importable here, as pytest makes them there.

``bench/`` is not a package (pytest puts it on ``sys.path`` when it runs a suite), and
``bench/flower/flower_app.py`` is the script Flower's processes run; the tests here check
both sides of the flower suite directly, without running a suite.
"""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
for folder in (BENCH / "flower", BENCH):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
