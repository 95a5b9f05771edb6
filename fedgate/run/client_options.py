"""What `fedgate client` is started with: light enough for the CLI to build its parser from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fedgate.transport.tls import ClientTls

# --deltas: "auto" sends differences for lossy codecs only
DELTAS: dict[str, bool | None] = {"auto": None, "on": True, "off": False}
KEY_ENV = "FEDGATE_ENROLMENT_KEY"  # where `fedgate client` finds its key by default


@dataclass(frozen=True)
class ClientOptions:
    server: str
    transport: str
    codec: str
    index: int
    of: int
    dataset: str = "digits"
    model: str = "cnn"
    partition: str = "iid"
    seed: int = 0
    name: str = ""
    threads: int = 0  # torch threads; 0 keeps torch's default
    deltas: bool | None = None  # None: deltas when the codec is lossy
    tls: ClientTls | None = None  # None: plain text (REST: unless the server URL is https://)
    key: str = field(default="", repr=False)  # the enrolment key (fgk_...); "": none
    give_up_after_s: float | None = None  # without an answer from the server; None: never
    data_dir: Path | None = None  # cifar10, cifar100, imagefolder; None: $FEDGATE_DATA_DIR
