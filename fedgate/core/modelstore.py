"""Global model versions, and the encodings clients fetch, each computed once.

A client is sent either a version in full, or — when it names a model it already holds —
the difference to that model. Every model a client can hold gets a *reference*: the
exact tensors the client has after decoding (for a lossy codec, not the version itself).
The server keeps them, so deltas are always taken against what the client really holds
and lossy downlinks never drift. References are shared: clients that followed the same
path hold the same one, so each (version, codec, starting point) is encoded once.

What clients can make the server keep is bounded: encodings and derived references live
in one least-recently-used cache with a byte budget (the versions themselves are never
evicted), and a fetch that would leave the client holding exactly what it already holds
reuses its reference instead of minting a new one, so asking again and again adds nothing.
An evicted reference only costs its holder a full download next time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from fedgate.codecs import Codec, SparseCodec, TensorDict, get_codec
from fedgate.core import delta
from fedgate.core.messages import EncodedModel
from fedgate.core.observer import NULL_OBSERVER, Observer
from fedgate.core.offload import CodecOffload
from fedgate.errors import Conflict

log = logging.getLogger("fedgate.models")

KEEP_VERSIONS = 2  # the current model and the one before it, for clients a round behind
# Cache budget: this many models' worth of encodings and references, at least MIN_BUDGET.
BUDGET_MODELS = 16
MIN_BUDGET = 64 * 1024**2


@dataclass(frozen=True)
class Reference:
    """A model some client holds: which version it stands for, and its exact tensors."""

    ref: str
    version: int
    weights: TensorDict


@dataclass(frozen=True)
class Encoding:
    model: EncodedModel
    held: Reference | None = None  # a new reference, when the client will not hold a version
    seconds: float = 0.0  # how long encoding (and working out ``held``) took


class ModelStore:
    def __init__(
        self, initial: Mapping[str, torch.Tensor], budget_bytes: int = 0, *, version: int = 0
    ) -> None:
        """``initial`` as ``version`` (0 for a new run; a resumed run's last version)."""
        self._versions: dict[int, TensorDict] = {version: _copy(initial)}
        start = Reference(str(version), version, self._versions[version])
        self._refs: dict[str, Reference] = {start.ref: start}
        self._encoded: dict[tuple[int, str, str], asyncio.Task[Encoding]] = {}
        # what the budget counts, least recently used first: encodings by key, refs by name
        self._lru: OrderedDict[tuple[int, str, str] | str, int] = OrderedDict()
        self._ids = itertools.count(1)
        # Derived references carry this process's mark: after a restart a client may still
        # name a reference the last process minted, and it must not match a new one.
        self._mark = secrets.token_hex(3)
        self.version = version
        self.budget_bytes = budget_bytes or max(
            MIN_BUDGET, BUDGET_MODELS * nbytes(self._versions[version])
        )
        self.observer: Observer = NULL_OBSERVER  # told each encoding's codec and time
        # the codecs the latest versions went out in, in full: what the next version will
        # be asked for (clients without deltas ask for every version in full)
        self._full_codecs: dict[int, set[str]] = {}
        self._preparing: set[asyncio.Task[EncodedModel]] = set()
        # where GIL-bound codecs run (the federation's pool); alone, in threads as the rest
        self.offload = CodecOffload(workers=0)

    @property
    def cached_bytes(self) -> int:
        """Bytes held by cached encodings and derived references (not the versions)."""
        return sum(self._lru.values())

    @property
    def current(self) -> TensorDict:
        """The current global weights. Treat as read-only: versions are never mutated."""
        return self._versions[self.version]

    def get(self, version: int) -> TensorDict:
        try:
            return self._versions[version]
        except KeyError:
            raise Conflict(
                f"model version {version} is not served; the current version is {self.version}"
            ) from None

    def reference(self, ref: str) -> Reference:
        try:
            held = self._refs[ref]
        except KeyError:
            raise Conflict(f"model reference {ref!r} is unknown or has expired") from None
        self._touch(ref)
        return held

    def publish(self, weights: Mapping[str, torch.Tensor]) -> int:
        """Make ``weights`` the next version; forget what is older than KEEP_VERSIONS."""
        self.version += 1
        self._versions[self.version] = dict(weights)
        self._refs[str(self.version)] = Reference(str(self.version), self.version, dict(weights))
        oldest = self.version - KEEP_VERSIONS + 1
        for old in [v for v in self._versions if v < oldest]:
            del self._versions[old]
        for ref in [r for r, held in self._refs.items() if held.version < oldest]:
            self._forget(ref)
        for key in [k for k in self._encoded if k[0] < oldest]:
            self._forget(key)
        for version in [v for v in self._full_codecs if v < self.version - 1]:
            del self._full_codecs[version]
        return self.version

    def prepare_next(self) -> None:
        """Start encoding the current version in full in each codec the version before it
        went out in full, without waiting: the clients that asked for that one will ask
        for this one as the next round opens, and find it encoded (or under way)."""
        for codec_name in sorted(self._full_codecs.get(self.version - 1, ())):
            task = asyncio.create_task(self.encoded(self.version, codec_name, ahead=True))
            self._preparing.add(task)
            task.add_done_callback(functools.partial(self._prepared, self.version))

    def _prepared(self, version: int, task: asyncio.Task[EncodedModel]) -> None:
        self._preparing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # the clients' own requests will meet (and report) the same failure
            log.warning("encoding model version %d ahead failed: %s", version, task.exception())

    async def encoded(
        self, version: int, codec_name: str, have_ref: str = "", *, ahead: bool = False
    ) -> EncodedModel:
        """``version`` in ``codec_name``: a delta to ``have_ref`` if that is still known and
        not newer, else in full. Computed at most once however many clients ask.
        ``ahead``: asked by `prepare_next`, not by a client (it does not count as asked)."""
        target = self.get(version)
        codec_name = get_codec(codec_name).name  # one cache key however the name is spelt
        base = self._refs.get(have_ref) if have_ref else None
        if base is not None and base.version > version:
            base = None
        if base is None:  # a whole model travels in the dense codec: every top-k shares it
            codec_name = dense_codec(get_codec(codec_name)).name
            if not ahead:
                self._full_codecs.setdefault(version, set()).add(codec_name)
        key = (version, codec_name, base.ref if base else "")
        task = self._encoded.get(key)
        if task is None:
            work = asyncio.to_thread(self._timed_encode, target, version, codec_name, base)
            task = asyncio.create_task(work)
            task.add_done_callback(self._report_encoding)  # once, however many wait for it
            self._encoded[key] = task
        try:
            # shield: one caller giving up must not cancel the encoding others wait for
            encoding = await asyncio.shield(task)
        except Exception:
            self._encoded.pop(key, None)
            raise
        if key in self._encoded:  # registered here, on the loop's thread
            self._account(key, len(encoding.model.payload))
            held = encoding.held
            if held is not None and held.version in self._versions:
                if held.ref not in self._refs:
                    self._refs[held.ref] = held
                self._account(held.ref, nbytes(held.weights))
            self._evict(keep=(key, encoding.model.ref))
        return encoding.model

    def _account(self, item: tuple[int, str, str] | str, size: int) -> None:
        self._lru[item] = size
        self._lru.move_to_end(item)

    def _touch(self, item: tuple[int, str, str] | str) -> None:
        if item in self._lru:
            self._lru.move_to_end(item)

    def _forget(self, item: tuple[int, str, str] | str) -> None:
        self._lru.pop(item, None)
        if isinstance(item, str):
            self._refs.pop(item, None)
        else:
            self._encoded.pop(item, None)

    def _evict(self, keep: tuple[tuple[int, str, str], str]) -> None:
        """Drop the least recently used items until the cache fits its budget; never what
        the caller is about to hand out, nor an encoding still being computed."""
        total = self.cached_bytes
        for item in list(self._lru):
            if total <= self.budget_bytes:
                return
            task = self._encoded.get(item) if not isinstance(item, str) else None
            if item in keep or (task is not None and not task.done()):
                continue
            total -= self._lru[item]
            self._forget(item)

    def _report_encoding(self, task: asyncio.Task[Encoding]) -> None:
        if not task.cancelled() and task.exception() is None:
            encoding = task.result()
            self.observer.encoded(encoding.model.codec, encoding.seconds)

    def _timed_encode(
        self, target: TensorDict, version: int, codec_name: str, base: Reference | None
    ) -> Encoding:
        started = time.perf_counter()
        encoding = self._encode(target, version, codec_name, base)
        return dataclasses.replace(encoding, seconds=time.perf_counter() - started)

    def _encode(
        self, target: TensorDict, version: int, codec_name: str, base: Reference | None
    ) -> Encoding:
        """Worker thread: encode, and work out exactly what the client will hold. A
        GIL-bound codec's work goes on to a worker process (`CodecOffload.runner`), which
        this thread waits for without holding the loop."""
        codec = get_codec(codec_name)
        if base is None:
            codec = self.offload.runner(dense_codec(codec))
            payload = codec.encode(target)
            if not codec.lossy:  # the client will hold exactly this version
                return Encoding(EncodedModel(version, codec.name, payload, ref=str(version)))
            held = codec.decode(payload)
        else:
            codec = self.offload.runner(downlink_codec(codec))
            payload = codec.encode(delta.difference(target, base.weights))
            held = delta.apply(base.weights, codec.decode(payload))
            if base.version == version and _equal(held, base.weights):
                # the client already holds this version: asking again mints no reference
                model = EncodedModel(version, codec.name, payload, ref=base.ref, base_ref=base.ref)
                return Encoding(model)
        ref = f"{version}.{self._mark}{next(self._ids)}"
        start = base.ref if base else ""
        model = EncodedModel(version, codec.name, payload, ref=ref, base_ref=start)
        return Encoding(model, Reference(ref, version, held))


def dense_codec(codec: Codec) -> Codec:
    """The codec a full model travels in: the codec itself, unless it only suits deltas
    (a `SparseCodec` names a dense one to carry whole models)."""
    return get_codec(codec.dense_codec) if isinstance(codec, SparseCodec) else codec


def downlink_codec(codec: Codec) -> Codec:
    """The codec a model delta travels down in: the client's, unless it names another."""
    return get_codec(codec.downlink_codec) if isinstance(codec, SparseCodec) else codec


def nbytes(weights: Mapping[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in weights.values())


def _equal(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def _copy(weights: Mapping[str, torch.Tensor]) -> TensorDict:
    return {name: t.detach().cpu().clone() for name, t in weights.items()}
