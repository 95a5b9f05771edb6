"""Hypothesis profiles for the codec fuzzers: bounded in the normal run, long in `make fuzz`.

The profiles are registered here and applied by the fuzz tests themselves (never loaded
globally, so other suites' hypothesis settings are left alone). ``FEDGATE_FUZZ=1``
selects the long one: twenty times the examples, fresh random ones on each run.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

NORMAL_EXAMPLES = 100
LONG_FACTOR = 20

settings.register_profile(
    "fedgate-codecs",
    max_examples=NORMAL_EXAMPLES,
    deadline=None,  # 2 shared cores: a slow example is load, not a bug
    derandomize=True,  # the normal run is deterministic; `make fuzz` explores
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "fedgate-codecs-fuzz",
    parent=settings.get_profile("fedgate-codecs"),
    max_examples=NORMAL_EXAMPLES * LONG_FACTOR,
    derandomize=False,
)


def fuzz_settings() -> settings:
    """The profile this run uses: the long one when ``FEDGATE_FUZZ=1``."""
    long_run = os.environ.get("FEDGATE_FUZZ") == "1"
    return settings.get_profile("fedgate-codecs-fuzz" if long_run else "fedgate-codecs")
