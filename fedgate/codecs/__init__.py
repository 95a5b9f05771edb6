"""Codecs by name. A client names its codec when it joins; the server uses the registry."""

from __future__ import annotations

from fedgate.codecs.base import DEFAULT_LIMITS, Codec, DecodeLimits, TensorDict
from fedgate.codecs.bf16_zstd import Bf16ZstdCodec
from fedgate.codecs.json_lists import JsonCodec
from fedgate.codecs.msgpack_map import MsgpackCodec
from fedgate.codecs.raw import RawCodec
from fedgate.errors import UnknownCodec

CODECS: dict[str, Codec] = {
    codec.name: codec for codec in (JsonCodec(), RawCodec(), MsgpackCodec(), Bf16ZstdCodec())
}


def get_codec(name: str) -> Codec:
    """The registered codec called ``name``; an unknown name lists the available ones."""
    try:
        return CODECS[name]
    except KeyError:
        raise UnknownCodec(name, list(CODECS)) from None


def codec_names() -> list[str]:
    return list(CODECS)


__all__ = [
    "CODECS",
    "DEFAULT_LIMITS",
    "Codec",
    "DecodeLimits",
    "TensorDict",
    "codec_names",
    "get_codec",
]
