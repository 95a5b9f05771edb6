"""The resource flags of `fedgate serve`: what one upload may cost, and for how long."""

from __future__ import annotations

import argparse

from fedgate.core.enrolment import PEER_JOINS, JoinLimits
from fedgate.core.ratelimit import Rate
from fedgate.errors import ConfigError
from fedgate.transport.limits import DEFAULT_UPLOAD_TIMEOUTS, UploadTimeouts

DEFAULT_MAX_UPDATE_MB = 1024.0


def add_limit_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("limits (both transports)")
    group.add_argument(
        "--max-update-mb",
        type=float,
        default=DEFAULT_MAX_UPDATE_MB,
        help="a ceiling on any update body; the limit each upload gets is already derived "
        "from the model (about twice its size in the upload's codec), so this only lowers it",
    )
    group.add_argument(
        "--upload-idle-timeout",
        type=float,
        default=DEFAULT_UPLOAD_TIMEOUTS.idle_s,
        help="seconds an upload may pause between two pieces of its body",
    )
    group.add_argument(
        "--upload-timeout",
        type=float,
        default=DEFAULT_UPLOAD_TIMEOUTS.total_s,
        help="seconds a whole upload body may take",
    )
    group.add_argument(
        "--max-concurrent-uploads",
        type=int,
        default=32,
        help="uploads in progress at once, all clients together (one per client)",
    )
    group.add_argument(
        "--peer-join-burst",
        type=int,
        default=PEER_JOINS.burst,
        help="joins one address may make at once (then about one a second); raise it when "
        "many clients share an address (a NAT, a simulation on one machine)",
    )


def join_limits(args: argparse.Namespace) -> JoinLimits:
    if not 1 <= args.peer_join_burst <= 1_000_000:
        raise ConfigError(f"--peer-join-burst must be in [1, 1000000], got {args.peer_join_burst}")
    return JoinLimits(per_peer=Rate(args.peer_join_burst, PEER_JOINS.per_s))


def upload_timeouts(args: argparse.Namespace) -> UploadTimeouts:
    if not 0 < args.upload_idle_timeout <= args.upload_timeout:
        raise ConfigError("need 0 < --upload-idle-timeout <= --upload-timeout")
    return UploadTimeouts(idle_s=args.upload_idle_timeout, total_s=args.upload_timeout)


def max_update_bytes(args: argparse.Namespace) -> int:
    if not args.max_update_mb > 0:
        raise ConfigError("--max-update-mb must be > 0")
    return int(args.max_update_mb * 1024**2)
