"""What an update must pass before it may touch a round's aggregate.

Checks run in two steps, so that nobody costs the server more than a header before they
are known: `admit` runs on the event loop from the update's header alone (who sends it,
for which round and model, with what weight, in which codec) and hands out a `Permit`
that says how many body bytes may follow; `decode_and_fold` runs in a worker thread on
the body, decodes it within limits derived from the model's own layout, checks the
tensors and folds them in (`check_and_fold`, when the body was decoded in a worker process).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from fedgate.codecs import Buffer, DecodeLimits, TensorDict, get_codec
from fedgate.core import delta
from fedgate.core.messages import UpdateHeader
from fedgate.core.modelstore import ModelStore
from fedgate.core.registry import ClientRecord
from fedgate.core.rounds import Round
from fedgate.core.validation import check_finite, check_layout, check_num_examples
from fedgate.errors import DuplicateUpdate, NotSelected, PayloadTooLarge, RoundClosed


@dataclass(frozen=True)
class Permit:
    """An upload that passed every check short of reading its body, and what decoding needs.

    Held by the adapter while it reads the body; the client counts as uploading (one
    upload at a time per client) until the federation finishes or abandons it.
    """

    round: Round
    record: ClientRecord
    header: UpdateHeader
    reference: TensorDict  # the global model the round trains: names, shapes, dtypes
    base: TensorDict | None  # what a delta update is added to
    max_bytes: int  # the most body bytes this upload may have

    def check_size(self, size: int) -> None:
        """Refuse a body (declared or received) over this upload's limit."""
        if size > self.max_bytes:
            raise PayloadTooLarge(
                f"update of {size} bytes exceeds the limit of {self.max_bytes} bytes for "
                f"codec {self.header.codec!r}"
            )


def admit(
    round_: Round | None,
    record: ClientRecord,
    header: UpdateHeader,
    models: ModelStore,
    max_bytes: int,
) -> Permit:
    """Check an update's header against the open round; raise, or grant a `Permit`."""
    open_id = round_.round_id if round_ else "none"
    if round_ is None or header.round_id != round_.round_id:
        raise RoundClosed(f"round {header.round_id} is not open (open round: {open_id})")
    client_id = record.client_id
    if client_id not in round_.selected:
        raise NotSelected(f"client {client_id} was not selected for round {open_id}")
    if client_id in round_.dropped:
        raise RoundClosed(f"client {client_id} was dropped from round {open_id}; wait for the next")
    if client_id in round_.reported or client_id in round_.uploading:
        raise DuplicateUpdate(f"client {client_id} already sent round {open_id}")
    base = models.reference(header.base_ref) if header.base_ref else None
    # a delta's base must stand for the version the round trains, like the update itself
    trained_from = base.version if base else header.model_version
    if round_.base_version != header.model_version or trained_from != header.model_version:
        raise RoundClosed(
            f"update was trained from version {trained_from}; round {open_id} "
            f"trains version {round_.base_version}"
        )
    check_num_examples(header.num_examples, record.num_examples, record.max_num_examples)
    get_codec(header.codec)
    reference = models.get(round_.base_version)
    return Permit(round_, record, header, reference, base.weights if base else None, max_bytes)


def decode_and_fold(permit: Permit, payload: Buffer) -> float:
    """Worker thread: decode within the model's layout, check, fold into the round;
    returns the seconds decoding and checking took (for the federation's observers)."""
    started = time.perf_counter()
    tensors = get_codec(permit.header.codec).decode(payload, update_limits(permit))
    return check_and_fold(permit, tensors, started)


def update_limits(permit: Permit) -> DecodeLimits:
    """What an update's body may decode to: exactly the layout of the model it trains."""
    return DecodeLimits.for_model(permit.reference)


def check_and_fold(permit: Permit, tensors: TensorDict, started: float) -> float:
    """Worker thread: check an update's decoded tensors (decoded here or in a worker
    process, within `update_limits`) and fold them into the round; returns the seconds
    from ``started`` to the end of the check.

    A delta is added to its base first and the sum is what is checked: a non-finite delta
    gives a non-finite sum, and a finite delta on a finite base can still overflow.
    """
    check_layout(tensors, permit.reference)
    header = permit.header
    if permit.base is not None:
        tensors = delta.apply(permit.base, tensors)
        check_layout(tensors, permit.reference)
    distance = checked_distance(permit.round, tensors)
    decode_s = time.perf_counter() - started
    permit.round.fold(
        tensors,
        header.num_examples,
        permit.record.client_id,
        train_loss=header.train_loss,
        key_id=permit.record.key_id,
        distance=distance,
    )
    return decode_s


def checked_distance(round_: Round, tensors: TensorDict) -> float:
    """The update's distance to the round's model, which also tells whether every value is
    finite (a NaN or infinity makes the float64 sum of squares non-finite); only then are
    the tensors read again, to name the one at fault."""
    distance = round_.measure(tensors)
    if not math.isfinite(distance):
        # raises unless every value is finite and only the float64 sum overflowed, which
        # the guard then refuses with the round's result
        check_finite(tensors)
    return distance
