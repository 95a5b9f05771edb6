"""Codecs by name. A client names its codec when it joins; the server uses the registry.

A codec with a parameter is named ``name:parameter`` (``topk-int8:0.01``); `CODECS`
lists each codec once, with its default parameter, under its plain name. Parameters come
from a small allowed set, and every spelling of one maps to one canonical name (the codec's
``name``), which is what callers should key anything by.
"""

from __future__ import annotations

from collections.abc import Callable

from fedgate.codecs import topk_int8
from fedgate.codecs.base import (
    DEFAULT_LIMITS,
    BoundedCodec,
    Buffer,
    Codec,
    DecodeLimits,
    GilBoundCodec,
    InvalidCodecParameter,
    SparseCodec,
    TensorDict,
    TensorLayout,
    holds_gil,
)
from fedgate.codecs.bf16_zstd import Bf16ZstdCodec
from fedgate.codecs.frame_codec import FrameCodec
from fedgate.codecs.int8_zstd import Int8ZstdCodec
from fedgate.codecs.json_lists import JsonCodec
from fedgate.codecs.msgpack_map import MsgpackCodec
from fedgate.codecs.raw import RawCodec
from fedgate.codecs.shuffle_zstd import Bf16ShuffleZstdCodec, Fp16ZstdCodec, ShuffleZstdCodec
from fedgate.errors import UnknownCodec

CODECS: dict[str, Codec] = {
    codec.name: codec
    for codec in (
        JsonCodec(),
        RawCodec(),
        MsgpackCodec(),
        Bf16ZstdCodec(),
        ShuffleZstdCodec(),
        Bf16ShuffleZstdCodec(),
        Fp16ZstdCodec(),
        Int8ZstdCodec(),
        topk_int8.DEFAULT_CODEC,
    )
}
# Codecs that take a parameter: name -> builds the codec from the text after the colon.
PARAMETERS: dict[str, Callable[[str, list[str]], Codec]] = {
    topk_int8.NAME: topk_int8.with_fraction,
}
# ... and the canonical names of every parameter value each allows (a small set: each
# name a client may pick costs the server its own cached encodings).
VARIANTS: dict[str, Callable[[], list[str]]] = {
    topk_int8.NAME: topk_int8.variant_names,
}


def get_codec(name: str) -> Codec:
    """The codec called ``name`` (or ``name:parameter``); unknown names list the available."""
    try:
        return CODECS[name]
    except KeyError:
        pass
    base, colon, parameter = name.partition(":")
    if not colon or base not in CODECS:
        raise UnknownCodec(name, list(CODECS))
    if base not in PARAMETERS:
        raise InvalidCodecParameter(name, f"{base!r} takes no parameter", list(CODECS))
    return PARAMETERS[base](parameter, list(CODECS))


def codec_names() -> list[str]:
    return list(CODECS)


def canonical_names() -> list[str]:
    """Every name `get_codec` accepts, each spelt canonically: `CODECS`' names, then each
    allowed parameter value of the codecs that take one. ``get_codec(n).name == n``."""
    names = list(CODECS)
    for variants in VARIANTS.values():
        names += [name for name in variants() if name not in names]
    return names


def codecs_with(capability: type, *, variants: bool = False) -> list[str]:
    """The names of the codecs that have ``capability``, in registry order.

    ``capability`` is a class the codecs share (`FrameCodec`) or a runtime-checkable
    Protocol they declare (`BoundedCodec`, `SparseCodec`). Tests take their codec lists
    from here, so a new codec of a kind is tested as one without being listed anywhere.
    With ``variants``, every canonical name (`canonical_names`), not only `CODECS`'.
    """
    names = canonical_names() if variants else codec_names()
    return [name for name in names if isinstance(get_codec(name), capability)]


def frame_codecs(*, variants: bool = False) -> list[str]:
    """The codecs that write the frame envelope (`FrameCodec`s)."""
    return codecs_with(FrameCodec, variants=variants)


__all__ = [
    "CODECS",
    "DEFAULT_LIMITS",
    "BoundedCodec",
    "Buffer",
    "Codec",
    "DecodeLimits",
    "FrameCodec",
    "GilBoundCodec",
    "InvalidCodecParameter",
    "SparseCodec",
    "TensorDict",
    "TensorLayout",
    "canonical_names",
    "codec_names",
    "codecs_with",
    "frame_codecs",
    "get_codec",
    "holds_gil",
]
