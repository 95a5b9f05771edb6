"""Values as the store writes them, and back: tensors, floats that may be NaN, JSON.

Tensors are written with safetensors (a header of names, dtypes and shapes, then raw bytes:
reading them never runs code) beside their `weights_hash`; on read the hash is computed
again from the tensors, so a row changed behind the store's back is refused, not served.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
from collections.abc import Mapping
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from fedgate.core.config import RunConfig
from fedgate.core.messages import Traffic
from fedgate.core.ports import TensorDict, weights_hash
from fedgate.errors import StoreCorrupt

ORDER_KEY = "fedgate.names"  # safetensors metadata: the tensors' names in their dict order


def pack_tensors(weights: Mapping[str, torch.Tensor]) -> bytes:
    """``weights`` as safetensors bytes (their order kept in the header's metadata)."""
    packable: TensorDict = {}
    storages: set[int] = set()
    for name, given in weights.items():
        tensor = given.detach().cpu().contiguous()
        storage = tensor.untyped_storage().data_ptr()
        if tensor.numel() and storage in storages:
            tensor = tensor.clone()  # safetensors refuses tensors that share memory
        storages.add(storage)
        packable[name] = tensor
    return save_safetensors(packable, metadata={ORDER_KEY: json.dumps(list(packable))})


def unpack_tensors(data: bytes, sha256: str, what: str) -> TensorDict:
    """The tensors in ``data``, if they hash to ``sha256``; else `StoreCorrupt`."""
    try:
        loaded = load_safetensors(data)
        names = _stored_order(data)
    except (SafetensorError, ValueError, struct.error) as error:
        raise StoreCorrupt(f"{what} is not readable safetensors: {error}") from None
    if sorted(names) != sorted(loaded):
        raise StoreCorrupt(f"{what}: the header's names do not match its tensors")
    weights = {name: loaded[name] for name in names}
    if weights_hash(weights) != sha256:
        raise StoreCorrupt(
            f"{what} does not match its SHA-256 {sha256[:12]}...: the row was changed or "
            "damaged outside fedgate; it is not served"
        )
    return weights


def _stored_order(data: bytes) -> list[str]:
    """The names in the order they were written (safetensors itself sorts them)."""
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    metadata = header.get("__metadata__") or {}
    if ORDER_KEY not in metadata:
        return sorted(name for name in header if name != "__metadata__")
    names = json.loads(metadata[ORDER_KEY])
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise ValueError("malformed tensor order")
    return names


def nan_to_null(value: float) -> float | None:
    return None if math.isnan(value) else value


def null_to_nan(value: float | None) -> float:
    return math.nan if value is None else value


def to_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def config_to_json(config: RunConfig) -> str:
    return to_json(dataclasses.asdict(config))


def config_from_json(text: str) -> RunConfig:
    """A stored config; keys this version does not know are ignored, so that a row written
    by an older (or newer) fedgate still loads, with defaults for what it lacks."""
    stored = json.loads(text)
    known = {f.name for f in dataclasses.fields(RunConfig)}
    return RunConfig(**{k: v for k, v in stored.items() if k in known})


def traffic_to_json(traffic: Mapping[str, Traffic]) -> str:
    return to_json({key: [t.up, t.down] for key, t in traffic.items()})


def traffic_from_json(text: str) -> dict[str, Traffic]:
    return {key: Traffic(int(up), int(down)) for key, (up, down) in json.loads(text).items()}


def ids_from_json(text: str) -> tuple[str, ...]:
    return tuple(str(item) for item in json.loads(text))
