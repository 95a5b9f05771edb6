"""The registry: every codec once by name, parameters as ``name:parameter``, clear refusals."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from fedgate.codecs import (
    CODECS,
    BoundedCodec,
    FrameCodec,
    InvalidCodecParameter,
    SparseCodec,
    canonical_names,
    codec_names,
    codecs_with,
    frame_codecs,
    get_codec,
)
from fedgate.codecs.frames import MAGIC as FRAMES_MAGIC
from fedgate.codecs.topk_int8 import DEFAULT_FRACTION, DOWNLINK_FACTOR, FRACTIONS, TopkInt8Codec
from fedgate.errors import ConfigError, UnknownCodec


def test_codecs_are_registered_by_name() -> None:
    for name in codec_names():
        assert get_codec(name) is CODECS[name] and CODECS[name].name == name
    assert not any(":" in name for name in CODECS), "CODECS lists default instances only"
    default = CODECS["topk-int8"]
    assert isinstance(default, TopkInt8Codec) and default.fraction == DEFAULT_FRACTION


def test_codec_kinds_come_from_what_the_codecs_are() -> None:
    """A codec that writes the frame envelope is a `FrameCodec`, so the tests that take
    `frame_codecs()` cover it; one that is not cannot write the envelope unnoticed."""
    model = {"w": torch.randn(16, 32), "n": torch.tensor(3)}
    for name in canonical_names():
        framed = get_codec(name).encode(model).startswith(FRAMES_MAGIC)
        assert framed == (name in frame_codecs(variants=True)), name
    assert frame_codecs() == [n for n in codec_names() if isinstance(CODECS[n], FrameCodec)]
    assert set(frame_codecs()) <= set(frame_codecs(variants=True)) <= set(canonical_names())
    assert codecs_with(SparseCodec) and codecs_with(FrameCodec) == frame_codecs()


def test_a_sparse_codec_names_registered_codecs_for_what_it_does_not_carry() -> None:
    """Whole models (nothing to take a delta from) travel in the dense codec it names,
    deltas down to its clients in its downlink codec."""
    for name in codecs_with(SparseCodec, variants=True):
        codec = get_codec(name)
        assert isinstance(codec, SparseCodec)
        assert codec.dense_codec in CODECS
        assert not isinstance(CODECS[codec.dense_codec], SparseCodec)
        assert get_codec(codec.downlink_codec).name == codec.downlink_codec


def test_media_types_are_distinct() -> None:
    media_types = [codec.media_type for codec in CODECS.values()]
    assert len(set(media_types)) == len(media_types)


def test_losslessness_is_declared_and_every_lossy_codec_states_its_bound() -> None:
    assert not CODECS["shuffle-zstd"].lossy and not CODECS["raw"].lossy
    assert CODECS["int8-zstd"].lossy and CODECS["topk-int8"].lossy
    for name in canonical_names():
        assert get_codec(name).lossy == isinstance(get_codec(name), BoundedCodec), name


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
        "topk-int8:0.3",  # in (0, 1], but not an allowed fraction
        "topk-int8:0.0999999",
        "topk-int8:1e-9",
    ],
)
def test_bad_parameters_are_refused_saying_what_is_expected(name: str) -> None:
    with pytest.raises(InvalidCodecParameter, match=r"must be one of 0\.001, 0\.005") as caught:
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
    for available in codec_names():
        assert available in str(caught.value)


def test_equivalent_spellings_are_one_codec_with_one_name() -> None:
    """Each distinct name costs the server cached encodings: spellings must not multiply."""
    assert get_codec("topk-int8:0.1") is CODECS["topk-int8"], "the default is the plain name"
    for spelling in ("0.10", "1e-1", ".1", "0.100000000000000000001", " 0.1"):
        assert get_codec(f"topk-int8:{spelling}") is CODECS["topk-int8"], spelling
    for spelling in ("0.05", "5e-2", "0.050", "5E-2"):
        assert get_codec(f"topk-int8:{spelling}").name == "topk-int8:0.05", spelling
    assert get_codec("topk-int8:1").name == get_codec("topk-int8:1.0").name == "topk-int8:1.0"


def test_canonical_names_are_fixed_points_and_a_small_set() -> None:
    names = canonical_names()
    assert names[: len(CODECS)] == list(CODECS)
    assert len(names) == len(set(names)) == len(CODECS) + len(FRACTIONS) - 1
    for name in names:
        assert get_codec(name).name == name
        assert get_codec(get_codec(name).name) is get_codec(name), "one instance per name"


def test_allowed_fractions_are_closed_under_the_downlink_rule() -> None:
    """Models go down at DOWNLINK_FACTOR times the client's fraction: still a canonical name."""
    assert DEFAULT_FRACTION in FRACTIONS and 1.0 in FRACTIONS
    for fraction in FRACTIONS:
        assert min(1.0, fraction * DOWNLINK_FACTOR) in FRACTIONS, fraction
        codec = get_codec(f"topk-int8:{fraction}")
        assert isinstance(codec, TopkInt8Codec)
        down = codec.downlink_codec
        assert down in canonical_names() and get_codec(down).name == down
        downlink = get_codec(down)
        assert isinstance(downlink, TopkInt8Codec)
        assert downlink.fraction == min(1.0, fraction * DOWNLINK_FACTOR)


def test_every_fraction_the_repository_names_is_allowed() -> None:
    """README, CLI help and benchmarks name fractions: each must stay a valid codec name."""
    root = Path(__file__).resolve().parents[2]
    files = [root / "README.md", *(root / "bench").rglob("*.py"), *(root / "fedgate").rglob("*.py")]
    files += [p for p in (root / "tests").rglob("*.py") if p.name != "test_registry.py"]
    found = {
        match
        for path in files
        if path.is_file()
        for match in re.findall(r"topk-int8:([0-9][0-9.eE+-]*)", path.read_text())
    }
    assert found, "the scan found no fraction at all"
    for parameter in found:
        assert float(parameter) in FRACTIONS, parameter
