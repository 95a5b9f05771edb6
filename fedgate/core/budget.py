"""How many body bytes an update may have: a small multiple of what the model takes.

The server knows the model, so it knows how large an honest update can be in each codec:
about the model's size in that codec (a delta or a sparse update is no larger than the
model's raw size). An upload is refused as soon as it is known to pass that, before its
body is read; ``--max-update-mb`` can only lower the figure. Without this a 38 MB JSON
body would be parsed (0.5 GB, seconds of the GIL) for a 0.15 MB model.
"""

from __future__ import annotations

from fedgate.codecs import get_codec
from fedgate.core.modelstore import ModelStore, nbytes

# An honest update re-encodes the same tensors; float text (JSON) can be a little longer
# than the model's own, compressed deltas a little less compressible. Twice is ample.
BODY_FACTOR = 2
BODY_SLACK = 64 * 1024  # headers and framing of tiny models


class UploadBudget:
    """Body limits per (model version, codec), worked out once from the model's encodings."""

    def __init__(self, models: ModelStore) -> None:
        self._models = models
        self._limits: dict[tuple[int, str], int] = {}

    async def body_limit(self, codec_name: str, version: int) -> int:
        """The most body bytes an update of ``version`` may have in ``codec_name``."""
        codec = get_codec(codec_name).name  # one key per codec, however it was spelt
        key = (version, codec)
        limit = self._limits.get(key)
        if limit is None:
            encoded = await self._models.encoded(version, codec)
            limit = (
                BODY_FACTOR * max(nbytes(self._models.get(version)), len(encoded.payload))
                + BODY_SLACK
            )
            self._forget_older_than(version - 1)
            self._limits[key] = limit
        return limit

    def _forget_older_than(self, version: int) -> None:
        for key in [k for k in self._limits if k[0] < version]:
            del self._limits[key]
