"""The registry: every codec once by name, parameters as ``name:parameter``, clear refusals."""

from __future__ import annotations

import pytest

from fedgate.codecs import CODECS, InvalidCodecParameter, codec_names, get_codec
from fedgate.codecs.topk_int8 import DEFAULT_FRACTION, TopkInt8Codec
from fedgate.errors import ConfigError, UnknownCodec

NEW = ["shuffle-zstd", "bf16-shuffle-zstd", "fp16-zstd", "int8-zstd", "topk-int8"]


def test_the_new_codecs_are_registered_by_name() -> None:
    for name in NEW:
        assert name in codec_names() and get_codec(name) is CODECS[name]
    assert not any(":" in name for name in CODECS), "CODECS lists default instances only"
    default = CODECS["topk-int8"]
    assert isinstance(default, TopkInt8Codec) and default.fraction == DEFAULT_FRACTION


def test_a_sparsifying_codec_names_a_registered_dense_one() -> None:
    """Whole models (nothing to take a delta from) travel in the codec it names."""
    for name in ("topk-int8", "topk-int8:0.01"):
        codec = get_codec(name)
        assert isinstance(codec, TopkInt8Codec)
        assert codec.dense_codec in CODECS
        assert not hasattr(CODECS[codec.dense_codec], "dense_codec")


def test_media_types_are_distinct() -> None:
    media_types = [codec.media_type for codec in CODECS.values()]
    assert len(set(media_types)) == len(media_types)


def test_losslessness_is_declared() -> None:
    assert not CODECS["shuffle-zstd"].lossy
    assert all(CODECS[name].lossy for name in NEW if name != "shuffle-zstd")


def test_a_parameter_picks_a_variant() -> None:
    codec = get_codec("topk-int8:0.01")
    assert isinstance(codec, TopkInt8Codec)
    assert codec.fraction == 0.01 and codec.name == "topk-int8:0.01"
    assert get_codec("topk-int8:1e-3").name == "topk-int8:0.001", "names are canonical"
    whole = get_codec("topk-int8:1")
    assert isinstance(whole, TopkInt8Codec) and whole.fraction == 1.0


@pytest.mark.parametrize(
    "name",
    [
        "topk-int8:2",
        "topk-int8:x",
        "topk-int8:0",
        "topk-int8:-0.1",
        "topk-int8:nan",
        "topk-int8:inf",
        "topk-int8:",
        "topk-int8:0.1:2",
    ],
)
def test_bad_parameters_are_refused_saying_what_is_expected(name: str) -> None:
    with pytest.raises(InvalidCodecParameter, match=r"\(0, 1\]") as caught:
        get_codec(name)
    assert isinstance(caught.value, UnknownCodec) and isinstance(caught.value, ConfigError)
    assert caught.value.code == "unknown_codec"
    assert name in str(caught.value)


@pytest.mark.parametrize("name", ["raw:3", "int8-zstd:0.5", "bf16-zstd:"])
def test_codecs_without_parameters_refuse_one(name: str) -> None:
    with pytest.raises(InvalidCodecParameter, match="takes no parameter"):
        get_codec(name)


@pytest.mark.parametrize("name", ["nope", "nope:1", ":0.1", "TOPK-INT8"])
def test_unknown_names_list_the_available_codecs(name: str) -> None:
    with pytest.raises(UnknownCodec) as caught:
        get_codec(name)
    assert not isinstance(caught.value, InvalidCodecParameter)
    for available in NEW:
        assert available in str(caught.value)
