"""Split a data set among clients: iid, label skew, size skew, or label shards.

Specs: ``iid``, ``dirichlet:<alpha>``, ``quantity:<alpha>``, ``shards:<k>``. The same
labels, client count, spec and seed always give the same split, so independent client
processes can each compute the split and take their own part.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fedgate.errors import ConfigError

SPECS = "iid, dirichlet:<alpha>, quantity:<alpha>, shards:<k>"
MIN_PER_CLIENT = 2  # every client gets at least this many examples
_MAX_DRAWS = 1000

Partition = list[np.ndarray]


def partition(labels: np.ndarray, num_clients: int, spec: str, seed: int = 0) -> Partition:
    """Indices into ``labels`` for each of ``num_clients`` clients, disjoint and sorted."""
    if num_clients < 1:
        raise ConfigError("the number of clients must be >= 1")
    if len(labels) < num_clients * MIN_PER_CLIENT:
        raise ConfigError(
            f"{len(labels)} examples cannot give {num_clients} clients {MIN_PER_CLIENT} each"
        )
    kind, parameter = _parse(spec)
    rng = np.random.default_rng(seed)
    parts = _SCHEMES[kind](np.asarray(labels), num_clients, parameter, rng)
    return [np.sort(part) for part in parts]


def client_rows(labels: np.ndarray, spec: str, index: int, of: int, seed: int) -> np.ndarray:
    """Client ``index`` of ``of``: its rows of a training split with ``labels``.

    Every client computes the same split from (spec, of, seed) and takes its own part, so
    clients in separate processes need no coordination to get disjoint data."""
    if not 0 <= index < of:
        raise ValueError(f"client index {index} is outside 0..{of - 1}")
    return partition(labels, of, spec, seed)[index]


def _parse(spec: str) -> tuple[str, float]:
    kind, _, value = spec.partition(":")
    if kind == "iid" and not value:
        return kind, 0.0
    if kind not in _SCHEMES or kind == "iid":
        raise ConfigError(f"unknown partition {spec!r}; use one of: {SPECS}")
    try:
        parameter = float(value)
    except ValueError:
        raise ConfigError(f"partition {spec!r} needs a number after ':' ({SPECS})") from None
    if not parameter > 0 or (kind == "shards" and parameter != int(parameter)):
        raise ConfigError(f"partition {spec!r}: the parameter must be a positive number")
    return kind, parameter


def _iid(labels: np.ndarray, n: int, _: float, rng: np.random.Generator) -> Partition:
    return list(np.array_split(rng.permutation(len(labels)), n))


def _dirichlet(labels: np.ndarray, n: int, alpha: float, rng: np.random.Generator) -> Partition:
    """Label skew: each class is spread over clients by proportions drawn from Dir(alpha)."""
    for _ in range(_MAX_DRAWS):
        parts: list[list[int]] = [[] for _ in range(n)]
        for label in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == label))
            cuts = (np.cumsum(rng.dirichlet([alpha] * n)) * len(members)).astype(int)[:-1]
            for client, chunk in enumerate(np.split(members, cuts)):
                parts[client].extend(chunk.tolist())
        if min(len(p) for p in parts) >= MIN_PER_CLIENT:
            return [np.asarray(p, dtype=np.int64) for p in parts]
    raise ConfigError(f"dirichlet:{alpha} left a client nearly empty in {_MAX_DRAWS} draws")


def _quantity(labels: np.ndarray, n: int, alpha: float, rng: np.random.Generator) -> Partition:
    """Size skew: client sizes drawn from Dir(alpha), at least MIN_PER_CLIENT each."""
    spare = len(labels) - n * MIN_PER_CLIENT
    extra = np.floor(rng.dirichlet([alpha] * n) * spare).astype(int)
    sizes = extra + MIN_PER_CLIENT
    sizes[np.argmax(sizes)] += len(labels) - int(sizes.sum())
    return list(np.split(rng.permutation(len(labels)), np.cumsum(sizes)[:-1]))


def _shards(labels: np.ndarray, n: int, k: float, rng: np.random.Generator) -> Partition:
    """Sort by label, cut into n*k shards, deal k random shards to each client."""
    if n * int(k) * MIN_PER_CLIENT > len(labels):
        raise ConfigError(f"shards:{int(k)} for {n} clients needs more than {len(labels)} examples")
    order = np.argsort(labels, kind="stable")
    shards = np.array_split(order, n * int(k))
    dealt = rng.permutation(len(shards)).reshape(n, int(k))
    return [np.concatenate([shards[s] for s in row]) for row in dealt]


_SCHEMES: dict[str, Callable[[np.ndarray, int, float, np.random.Generator], Partition]] = {
    "iid": _iid,
    "dirichlet": _dirichlet,
    "quantity": _quantity,
    "shards": _shards,
}
