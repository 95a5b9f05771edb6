"""Global model versions, and each version encoded once per codec (cached, off the loop)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import torch

from fedgate.codecs import TensorDict, get_codec
from fedgate.errors import Conflict

KEEP_VERSIONS = 2  # the current model and the one before it, for clients a round behind


class ModelStore:
    def __init__(self, initial: Mapping[str, torch.Tensor]) -> None:
        self._versions: dict[int, TensorDict] = {0: _fp_copy(initial)}
        self._encoded: dict[tuple[int, str], asyncio.Task[bytes]] = {}
        self.version = 0

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

    def publish(self, weights: Mapping[str, torch.Tensor]) -> int:
        """Make ``weights`` the next version; forget versions older than KEEP_VERSIONS."""
        self.version += 1
        self._versions[self.version] = dict(weights)
        oldest = self.version - KEEP_VERSIONS + 1
        for old in [v for v in self._versions if v < oldest]:
            del self._versions[old]
        for key in [k for k in self._encoded if k[0] < oldest]:
            del self._encoded[key]
        return self.version

    async def encoded(self, version: int, codec_name: str) -> bytes:
        """``version`` in ``codec_name``, encoded at most once however many clients ask."""
        weights = self.get(version)
        codec = get_codec(codec_name)
        key = (version, codec_name)
        task = self._encoded.get(key)
        if task is None:
            task = asyncio.create_task(asyncio.to_thread(codec.encode, weights))
            self._encoded[key] = task
        try:
            # shield: one caller giving up must not cancel the encoding others wait for
            return await asyncio.shield(task)
        except Exception:
            self._encoded.pop(key, None)
            raise


def _fp_copy(weights: Mapping[str, torch.Tensor]) -> TensorDict:
    return {name: t.detach().cpu().clone() for name, t in weights.items()}
