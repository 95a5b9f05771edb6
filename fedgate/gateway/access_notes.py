"""What `fedgate serve` tells its operator at start about who may get in: how to create
the first admin account and enrolment keys, or a warning when enrolment is open."""

from __future__ import annotations

import logging
import sys

from fedgate.core.enrolment import EnrolmentMode
from fedgate.gateway.server import Gateway

log = logging.getLogger("fedgate.serve")

OPEN_WARNING = (
    "WARNING: --enrolment open: anyone who can reach this server may join the federation "
    "and send updates, each weighted up to 2^31 examples. Serve with --enrolment key (the "
    "default) and hand out keys from `fedgate keys create`."
)


def print_access_notes(gateway: Gateway) -> None:
    federation = gateway.federation
    if federation.enrolment.mode is EnrolmentMode.OPEN:
        print(OPEN_WARNING, file=sys.stderr, flush=True)
        log.warning("enrolment is open: anyone who reaches the server may join")
    for line in access_notes(gateway):
        print(line)
    sys.stdout.flush()


def access_notes(gateway: Gateway) -> list[str]:
    """The commands an operator needs next, with this server's URL and admin token."""
    settings = gateway.settings
    server = f"--server {gateway.http_url}" + (" --tls-ca CA.pem" if settings.tls else "")
    token = f"FEDGATE_TOKEN={settings.admin_token}"
    notes: list[str] = []
    if not gateway.federation.accounts.has_users():
        notes += [
            "  accounts no users yet; create the first admin (it asks for a password):",
            f"           {token} fedgate users add admin --role admin {server}",
        ]
    if gateway.federation.enrolment.mode is EnrolmentMode.KEY:
        notes += [
            "  clients  join with an enrolment key; create one (its secret is shown once):",
            f"           {token} fedgate keys create NAME --max-clients N --max-examples M "
            f"{server}",
            "           then: fedgate client --key fgk_... (or FEDGATE_ENROLMENT_KEY=fgk_...)",
        ]
    return notes
