"""What clients can make the model store keep is bounded: a byte budget over encodings and
derived references, and no new reference for asking again what one already holds."""

from __future__ import annotations

import pytest
import torch

from fedgate.codecs import CODECS, SparseCodec, codecs_with, get_codec
from fedgate.core.budget import BODY_FACTOR, BODY_SLACK, UploadBudget
from fedgate.core.modelstore import ModelStore, nbytes
from fedgate.core.observer import NullObserver
from fedgate.errors import CodecError
from tests.conftest import until


def model(value: float = 1.0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {"w": value + torch.randn(4096, generator=generator), "b": torch.zeros(16)}


async def test_asking_again_for_the_version_one_holds_soon_mints_no_reference() -> None:
    """A lossy holder that asks again gets a refinement (the codec's error on its own
    error) until what it holds stops changing; from then on it keeps its reference."""
    store = ModelStore(model())
    store.publish(model(2.0))
    held = await store.encoded(1, "bf16-zstd")
    chain = [held.ref]
    for _ in range(50):
        held = await store.encoded(1, "bf16-zstd", have_ref=held.ref)
        if held.ref != chain[-1]:
            chain.append(held.ref)
    assert len(chain) <= 4, chain  # fp32 has 24 bits: bf16's 8 per step close the gap
    refs = set(store._refs)
    again = await store.encoded(1, "bf16-zstd", have_ref=held.ref)
    assert again.ref == held.ref == again.base_ref and set(store._refs) == refs


async def test_encodings_and_references_stay_within_the_byte_budget() -> None:
    budget = 6 * nbytes(model())
    store = ModelStore(model(), budget_bytes=budget)
    store.publish(model(2.0))
    # a client walking every codec and every reference it can name, over and over
    for _ in range(3):
        for codec in CODECS:
            for ref in list(store._refs):
                await store.encoded(1, codec, have_ref=ref)
                assert store.cached_bytes <= budget + nbytes(model()), store.cached_bytes
    assert store.reference("1").version == 1  # versions themselves are never evicted
    assert store.reference("0").version == 0


async def test_an_evicted_reference_costs_its_holder_a_full_download_only() -> None:
    store = ModelStore(model(), budget_bytes=1)  # keeps nothing but what it hands out
    store.publish(model(2.0))
    first = await store.encoded(1, "int8-zstd")
    for codec in ("bf16-zstd", "fp16-zstd", "topk-int8"):
        await store.encoded(1, codec)
    store.publish(model(3.0))
    later = await store.encoded(2, "int8-zstd", have_ref=first.ref)
    assert later.base_ref in ("", first.ref)  # a delta if it is still known, else in full


async def test_the_body_limit_follows_the_model_and_the_codec() -> None:
    store = ModelStore(model())
    budget = UploadBudget(store)
    raw = nbytes(model())
    for codec in CODECS:
        limit = await budget.body_limit(codec, 0)
        encoded = len((await store.encoded(0, codec)).payload)
        assert limit == BODY_FACTOR * max(raw, encoded) + BODY_SLACK, codec
    # text is larger than the tensors it holds: JSON gets more room, but not a gigabyte
    assert raw < await budget.body_limit("raw", 0) < await budget.body_limit("json", 0) < 1 << 20


async def test_sparse_codecs_share_their_dense_codecs_whole_model_encoding() -> None:
    """Every top-k fraction, say: whole models go in the one dense codec they all name."""
    store = ModelStore(model())
    names = codecs_with(SparseCodec, variants=True)
    sent = {name: await store.encoded(0, name) for name in names}
    dense = {codec.dense_codec for codec in map(get_codec, names) if isinstance(codec, SparseCodec)}
    assert len(names) > 5 and len({id(m) for m in sent.values()}) == len(dense)
    assert len(store._encoded) == len(dense)


class Encodings(NullObserver):
    """The codec of each encoding the store makes, in order."""

    def __init__(self) -> None:
        self.codecs: list[str] = []

    def encoded(self, codec: str, seconds: float) -> None:
        self.codecs.append(codec)


async def test_a_new_version_is_encoded_ahead_in_the_codecs_the_last_went_out_in_full() -> None:
    store, seen = ModelStore(model()), Encodings()
    store.observer = seen
    await store.encoded(0, "raw")
    held = await store.encoded(0, "bf16-zstd")
    store.publish(model(2.0))
    store.prepare_next()  # version 0 went out in full in raw and in bf16-zstd
    await until(lambda: not store._preparing)
    assert sorted(seen.codecs[2:]) == ["bf16-zstd", "raw"]
    raw = await store.encoded(1, "raw")  # found encoded: no encoding of its own
    again = await store.encoded(1, "bf16-zstd", have_ref=held.ref)  # a delta: encoded now
    assert seen.codecs[4:] == ["bf16-zstd"] and again.base_ref == held.ref
    assert raw.payload == get_codec("raw").encode(model(2.0))
    store.publish(model(3.0))
    store.prepare_next()  # version 1 went out in full in raw only
    await until(lambda: not store._preparing)
    assert seen.codecs[5:] == ["raw"]
    assert set(store._full_codecs) <= {1, 2}  # what older versions went out in is forgotten


async def test_a_failed_encoding_ahead_is_logged_and_asked_for_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = ModelStore(model())
    await store.encoded(0, "raw")
    store.publish({"w": torch.zeros(2, dtype=torch.complex64)})  # no codec encodes it
    store.prepare_next()
    await until(lambda: not store._preparing)
    assert "encoding model version 1 ahead failed" in caplog.text
    with pytest.raises(CodecError):  # not cached: the client's own request meets it too
        await store.encoded(1, "raw")
