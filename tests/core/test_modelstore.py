"""What clients can make the model store keep is bounded: a byte budget over encodings and
derived references, and no new reference for asking again what one already holds."""

from __future__ import annotations

import torch

from fedgate.codecs import CODECS, SparseCodec, codecs_with, get_codec
from fedgate.core.budget import BODY_FACTOR, BODY_SLACK, UploadBudget
from fedgate.core.modelstore import ModelStore, nbytes


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
