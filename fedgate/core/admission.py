"""What an update must pass before it may touch a round's aggregate.

`admit` runs on the event loop and checks everything short of decoding; `decode_and_fold`
runs in a worker thread, decodes, checks the tensors and folds them in.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedgate.codecs import DecodeLimits, TensorDict, get_codec
from fedgate.core import delta
from fedgate.core.messages import Update
from fedgate.core.modelstore import ModelStore
from fedgate.core.registry import ClientRecord
from fedgate.core.rounds import Round
from fedgate.core.validation import check_matches, check_num_examples
from fedgate.errors import DuplicateUpdate, NotSelected, PayloadTooLarge, RoundClosed


@dataclass(frozen=True)
class Admission:
    """An update that passed every check short of decoding, and what decoding needs."""

    round: Round
    update: Update
    reference: TensorDict  # the global model the round trains: names, shapes, dtypes
    base: TensorDict | None  # what a delta update is added to


def admit(
    round_: Round | None,
    record: ClientRecord,
    update: Update,
    models: ModelStore,
    max_update_bytes: int,
) -> Admission:
    open_id = round_.round_id if round_ else "none"
    if round_ is None or update.round_id != round_.round_id:
        raise RoundClosed(f"round {update.round_id} is not open (open round: {open_id})")
    if record.client_id not in round_.selected:
        raise NotSelected(f"client {record.client_id} was not selected for round {open_id}")
    if record.client_id in round_.reported or record.client_id in round_.uploading:
        raise DuplicateUpdate(f"client {record.client_id} already sent round {open_id}")
    base = models.reference(update.base_ref) if update.base_ref else None
    # a delta's base must stand for the version the round trains, like the update itself
    trained_from = base.version if base else update.model_version
    if round_.base_version != update.model_version or trained_from != update.model_version:
        raise RoundClosed(
            f"update was trained from version {trained_from}; round {open_id} "
            f"trains version {round_.base_version}"
        )
    check_num_examples(update.num_examples, record.num_examples)
    get_codec(update.codec)
    if len(update.payload) > max_update_bytes:
        raise PayloadTooLarge(f"update of {len(update.payload)} bytes exceeds {max_update_bytes}")
    reference = models.get(round_.base_version)
    return Admission(round_, update, reference, base.weights if base else None)


def decode_and_fold(admission: Admission, limits: DecodeLimits) -> None:
    """Worker thread: decode, check against the global model, fold into the round.

    A delta is checked before it is added to its base, and the sum again (a finite delta
    on a finite base can still overflow).
    """
    update = admission.update
    tensors = get_codec(update.codec).decode(update.payload, limits)
    check_matches(tensors, admission.reference)
    if admission.base is not None:
        tensors = delta.apply(admission.base, tensors)
        check_matches(tensors, admission.reference)
    admission.round.fold(tensors, update.num_examples)
