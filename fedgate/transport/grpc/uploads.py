"""An update's body read off a gRPC call, for SubmitUpdate (the call's own stream, to its
end) and for Work (the long-lived call's next messages, up to the declared size).

Both check the declared size against the limit before the first body chunk is read, and
the body never grows past it. Each chunk is copied once, as it comes, into the one
buffer of the declared size the body is assembled in, by a worker thread while the loop
takes the next chunk (`Filling`: a ResNet-50 upload in 106-116 ms instead of 113-132,
copied on the loop); the buffer then goes to the decoder as it is: the raw codec's
tensors share it. The buffer is memory the body's bytes fill, none of it touched before
they do: a body declared and never sent costs no resident memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from fedgate.core.messages import UpdateReceipt
from fedgate.core.service import FederationService
from fedgate.errors import InvalidUpdate, Overloaded, PayloadTooLarge
from fedgate.transport.filling import Filling
from fedgate.transport.grpc import serde
from fedgate.transport.grpc.proto import fedgate_pb2 as pb
from fedgate.transport.limits import UploadTimeouts

M = TypeVar("M")
DataOf = Callable[[M], "bytes | memoryview"]  # a chunk's bytes, or InvalidUpdate


async def receive_update(
    federation: FederationService,
    credentials: tuple[str, str],
    header: pb.UpdateHeader,
    max_bytes: int,
    body: Callable[[int], Awaitable[bytearray]],
) -> UpdateReceipt:
    """Admit an upload from its ``header``, read its body (``body(limit)``: at most
    ``limit`` bytes, the lower of ``max_bytes`` and what the federation admits) and hand
    it to the federation; an upload that fails on the way is abandoned."""
    client_id, token = credentials
    update = serde.update_header_from_proto(header)
    permit = await federation.begin_update(client_id, token, update, header.total_size)
    try:
        payload = await body(min(permit.max_bytes, max_bytes))
    except BaseException:
        federation.abandon_update(permit)
        raise
    return await federation.finish_update(permit, payload)


async def receive_body(
    chunks: AsyncIterator[M],
    data_of: DataOf[M],
    declared: int,
    limit: int,
    timeouts: UploadTimeouts,
    *,
    to_end: bool,
) -> bytearray:
    """The body of an upload of ``declared`` bytes: ``chunks`` read to their end
    (``to_end``: the call's own stream, which must end with the body) or up to the declared
    size (a Work call's, which goes on). Refused as soon as it passes what it declared or
    the limit allows, ends short, or stalls or takes too long (see `UploadTimeouts`)."""
    if declared < 0:
        raise InvalidUpdate(f"an update cannot be {declared} bytes")
    if declared > limit:
        raise PayloadTooLarge(f"update of {declared} bytes exceeds the limit of {limit}")
    try:
        body = Filling(declared)
    except MemoryError:  # a size the limit admits but no memory holds now
        raise Overloaded(f"no memory for an update of {declared} bytes now") from None
    try:
        async with asyncio.timeout(timeouts.total_s):
            while to_end or body.filled < declared:
                async with asyncio.timeout(timeouts.idle_s):
                    chunk = await anext(chunks, None)
                if chunk is None:
                    break
                data = data_of(chunk)
                try:
                    body.add(data)
                except ValueError:  # past the declared size: refused, nothing of it kept
                    raise PayloadTooLarge(f"upload passed its declared {declared} bytes") from None
    except TimeoutError:
        raise InvalidUpdate(
            f"upload too slow: refused after {body.filled} of {declared} bytes"
        ) from None
    if body.filled != declared:
        raise InvalidUpdate(f"upload ended after {body.filled} of {declared} bytes")
    return await body.result()
