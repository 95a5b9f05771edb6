"""argparse types shared by the subcommands, and `fedgate codecs`.

The codecs are torch code: they load when a ``--codec`` value is checked or `fedgate
codecs` runs, not when the parser is built (so `fedgate client --help` needs no torch).
"""

from __future__ import annotations

import argparse
from typing import Any

from fedgate.errors import FedgateError

CODEC_HELP = (
    "a codec (`fedgate codecs` lists them; topk-int8:<fraction> sets the share of each delta kept)"
)


def codec_name(name: str) -> str:
    """argparse type: a codec the registry knows, parameters included (topk-int8:0.01)."""
    from fedgate.codecs import get_codec  # noqa: PLC0415 - see the module docstring

    try:
        get_codec(name)
    except FedgateError as error:
        raise argparse.ArgumentTypeError(error.message) from None
    return name


def add_codecs_command(commands: Any) -> None:
    codecs = commands.add_parser("codecs", help="list the codecs a client may choose")
    codecs.set_defaults(handler=run_codecs_command)


def run_codecs_command(args: argparse.Namespace) -> int:
    from fedgate.codecs import canonical_names, get_codec  # noqa: PLC0415

    for name in canonical_names():
        codec = get_codec(name)
        kind = "lossy" if codec.lossy else "lossless"
        print(f"{name:<18} {kind:<9} {codec.media_type}")
    return 0
