"""Fuzzing every codec's decoder with mutated valid payloads (hypothesis).

Each codec the registry names (with every allowed top-k fraction) encodes a small model
holding float, int64, bool and scalar tensors; the fuzzers then mutate the bytes (bit
flips, overwrites, truncation, insertion, deletion, splicing with another payload) or
tamper with the header fields an honest encoder writes (inflated shapes, other dtypes,
wrong frame sizes, bad values of any type), and decode with and without the model's
layout. A decoder may only refuse with `CodecError` or `InvalidUpdate`; when it accepts
under the layout, the result is exactly the model's layout.

Bounded in the normal run; ``FEDGATE_FUZZ=1`` (`make fuzz`) runs twenty times as many
examples, new ones each time (profiles in conftest.py).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from functools import cache

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from fedgate.codecs import DecodeLimits, TensorDict, canonical_names, get_codec
from fedgate.codecs.base import DTYPES
from fedgate.errors import CodecError, InvalidUpdate
from tests.codecs.conftest import fuzz_settings
from tests.codecs.documents import Document, open_payload, seal

NAMES = canonical_names()
FUZZ = fuzz_settings()


def small_model(seed: int = 11) -> TensorDict:
    g = torch.Generator().manual_seed(seed)
    return {
        "conv.weight": torch.randn(4, 1, 3, 3, generator=g),  # too small to quantize
        "fc.weight": torch.randn(8, 40, generator=g),  # quantized by int8 and top-k
        "fc.bias": torch.randn(8, generator=g),
        "bn.num_batches_tracked": torch.tensor(12, dtype=torch.int64),
        "mask": torch.tensor([True, False, True, True, False]),
        "temperature": torch.tensor(0.5, dtype=torch.float64),
    }


MODEL = small_model()
LIMITS = DecodeLimits.for_model(MODEL)


@cache
def payloads(name: str) -> tuple[bytes, bytes]:
    """The codec's encoding of the model, and of another one (to splice with)."""
    codec = get_codec(name)
    other = {key: t if t.dtype == torch.bool else t * 3 for key, t in small_model(12).items()}
    return codec.encode(MODEL), codec.encode(other)


def decode_both_ways(name: str, payload: bytes) -> None:
    """Decode without limits and with the model's: refusals only, exact layout if accepted."""
    codec = get_codec(name)
    for limits in (None, LIMITS):
        try:
            decoded = codec.decode(payload) if limits is None else codec.decode(payload, limits)
        except (CodecError, InvalidUpdate):
            continue
        assert all(isinstance(t, torch.Tensor) for t in decoded.values())
        if limits is not None:
            assert_matches_layout(decoded)


def assert_matches_layout(decoded: TensorDict) -> None:
    assert LIMITS.layout is not None
    assert sorted(decoded) == sorted(entry.name for entry in LIMITS.layout)
    for entry in LIMITS.layout:
        assert decoded[entry.name].dtype == DTYPES[entry.dtype], entry.name
        assert tuple(decoded[entry.name].shape) == entry.shape, entry.name


@pytest.mark.parametrize("name", NAMES)
def test_honest_payloads_decode_under_the_layout(name: str) -> None:
    """The control: unmutated payloads decode, so the fuzzers mutate working inputs."""
    payload, spliced = payloads(name)
    assert_matches_layout(get_codec(name).decode(payload, LIMITS))
    assert_matches_layout(get_codec(name).decode(spliced, LIMITS))


# --- byte-level mutations -------------------------------------------------------------

Mutation = Callable[[bytes, bytes], bytes]
POSITIONS = st.floats(0, 1)  # where in the payload, as a share of its length
SOME_BYTES = st.binary(min_size=1, max_size=16)


def _at(data: bytes, share: float) -> int:
    return min(len(data), int(share * len(data)))


def _flip(share: float, bit: int) -> Mutation:
    def mutate(data: bytes, _: bytes) -> bytes:
        if not data:
            return data
        out, i = bytearray(data), min(len(data) - 1, _at(data, share))
        out[i] ^= 1 << bit
        return bytes(out)

    return mutate


def _overwrite(share: float, new: bytes) -> Mutation:
    def mutate(data: bytes, _: bytes) -> bytes:
        i = _at(data, share)
        return data[:i] + new + data[i + len(new) :]

    return mutate


def _truncate(share: float) -> Mutation:
    return lambda data, _: data[: _at(data, share)]


def _insert(share: float, new: bytes) -> Mutation:
    return lambda data, _: data[: _at(data, share)] + new + data[_at(data, share) :]


def _delete(share: float, count: int) -> Mutation:
    return lambda data, _: data[: _at(data, share)] + data[_at(data, share) + count :]


def _splice(mine: float, theirs: float) -> Mutation:
    return lambda data, other: data[: _at(data, mine)] + other[_at(other, theirs) :]


MUTATIONS = st.lists(
    st.one_of(
        st.builds(_flip, POSITIONS, st.integers(0, 7)),
        st.builds(_overwrite, POSITIONS, SOME_BYTES),
        st.builds(_truncate, POSITIONS),
        st.builds(_insert, POSITIONS, SOME_BYTES),
        st.builds(_delete, POSITIONS, st.integers(1, 64)),
        st.builds(_splice, POSITIONS, POSITIONS),
    ),
    min_size=1,
    max_size=4,
)


@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(mutations=MUTATIONS)
def test_mutated_bytes_are_only_refused(name: str, mutations: list[Mutation]) -> None:
    payload, other = payloads(name)
    for mutate in mutations:
        payload = mutate(payload, other)
    decode_both_ways(name, payload)


# --- header tampering ------------------------------------------------------------------

HUGE = [0, 1, 2, 3, 2**29, 2**31, 2**32 + 1, 2**62, 2**63, 2**64 + 1, -1]
NUMBERS = st.one_of(st.integers(-(2**70), 2**70), st.sampled_from(HUGE), st.floats())
WORDS = st.sampled_from([*DTYPES, "object", "complex64", "", "bytes", "shuffle", "int8", "topk"])
LEAVES = st.one_of(st.none(), st.booleans(), NUMBERS, WORDS, st.text(max_size=8))
VALUES = st.recursive(
    LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
# Values of the wrong type for any field, drawn often: each is a crash waiting in a check
# that assumed a type (a list is unhashable, a bool is an int, a float is not).
CONFUSION = st.sampled_from([[], {}, [1], [[1]], {"a": 1}, None, True, 1.5, "x", 2**64, -1]).map(
    copy.deepcopy  # a fresh object each time: tampering must not edit the examples
)
FIELD_VALUES = st.one_of(CONFUSION, VALUES)
FIELDS = ["name", "dtype", "wire", "shape", "kind", "k", "index", "data"]


def _tamper_entry(doc: Document, draw: st.DataObject) -> None:
    """Set one field of one entry to a hostile value, or reshape it plausibly."""
    i = draw.draw(st.integers(0, len(doc.entries) - 1), label="entry")
    entry = doc.entries[i]
    if not isinstance(entry, dict):  # replaced by an earlier tamper
        return
    action = draw.draw(
        st.sampled_from(["shape", "shape", "dtype", "dtype", "field", "field", "drop field"]),
        label="action",
    )
    if action == "shape" and isinstance(entry.get("shape"), list):
        shape = list(entry["shape"])
        how = draw.draw(st.sampled_from(["scale", "set", "add dim", "drop dim"]), label="how")
        if how == "add dim":
            shape.insert(draw.draw(st.integers(0, len(shape))), draw.draw(st.sampled_from(HUGE)))
        elif shape and how == "drop dim":
            shape.pop(draw.draw(st.integers(0, len(shape) - 1)))
        elif shape:
            j = draw.draw(st.integers(0, len(shape) - 1), label="dim")
            factor = draw.draw(st.sampled_from([2, 3, 2**20, 2**29, 2**63]), label="factor")
            scalable = how == "scale" and isinstance(shape[j], int)  # an earlier tamper's value
            shape[j] = shape[j] * factor if scalable else draw.draw(st.sampled_from(HUGE))
        entry["shape"] = shape
    elif action == "dtype":
        dtype = draw.draw(st.one_of(WORDS, CONFUSION), label="dtype")
        entry[draw.draw(st.sampled_from(["dtype", "wire"]))] = dtype
    elif action == "field":
        entry[draw.draw(st.sampled_from(FIELDS), label="field")] = draw.draw(FIELD_VALUES)
    else:
        entry.pop(draw.draw(st.sampled_from(FIELDS), label="dropped"), None)


def _tamper_list(doc: Document, draw: st.DataObject) -> None:
    """Drop, duplicate, reorder or replace whole entries."""
    i = draw.draw(st.integers(0, len(doc.entries) - 1), label="entry")
    action = draw.draw(st.sampled_from(["drop", "duplicate", "swap", "replace"]), label="list")
    if action == "drop":
        doc.entries.pop(i)
    elif action == "duplicate":
        doc.entries.insert(i, json.loads(json.dumps(doc.entries[i], default=repr)))
    elif action == "swap":
        j = draw.draw(st.integers(0, len(doc.entries) - 1), label="other")
        doc.entries[i], doc.entries[j] = doc.entries[j], doc.entries[i]
    else:
        doc.entries[i] = draw.draw(FIELD_VALUES, label="entry value")


def _tamper_top(doc: Document, draw: st.DataObject) -> None:
    """The frame table, the format's name or the buffers behind the header."""
    table = doc.extra.get("frames")
    action = draw.draw(st.sampled_from(["frames", "format", "contents"]), label="top")
    if action == "frames" and isinstance(table, list) and table:
        row = draw.draw(st.integers(0, len(table) - 1), label="row")
        column = draw.draw(st.integers(0, 1), label="column")
        table[row][column] = draw.draw(st.one_of(st.sampled_from(HUGE), FIELD_VALUES))
    elif action == "format":
        doc.extra["format"] = draw.draw(FIELD_VALUES, label="format")
    elif doc.contents:
        content = doc.contents[draw.draw(st.integers(0, len(doc.contents) - 1))]
        cut = draw.draw(st.integers(0, len(content)), label="cut")
        content[cut:] = draw.draw(st.binary(max_size=64), label="tail")


# Entries hold most of what a decoder trusts: they are tampered with most often.
TAMPERS = [_tamper_entry, _tamper_entry, _tamper_entry, _tamper_list, _tamper_top]


@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(draw=st.data())
def test_tampered_headers_are_only_refused(name: str, draw: st.DataObject) -> None:
    doc = open_payload(payloads(name)[0])
    tampers = draw.draw(
        st.lists(st.sampled_from(TAMPERS), min_size=1, max_size=3),
        label="tampers",
    )
    for tamper in tampers:
        if doc.entries:
            tamper(doc, draw)
    try:
        payload = seal(doc, keep_sizes=draw.draw(st.booleans(), label="keep sizes"))
    except (TypeError, ValueError, OverflowError):  # msgpack/json cannot carry the value
        assume(False)
        return
    decode_both_ways(name, payload)


def test_the_fuzzed_codecs_are_the_registrys() -> None:
    """Parametrised from the registry: a new codec or fraction is fuzzed without an edit."""
    assert set(NAMES) >= {"raw", "json", "msgpack", "topk-int8:0.01"}
    assert all(get_codec(name).name == name for name in NAMES)
