"""Moved: the REST app is the REST adapter's, `fedgate.transport.rest.app` (the transport
layer may not import the gateway). Kept so that older imports still work."""

from __future__ import annotations

from fedgate.transport.rest.app import create_app

__all__ = ["create_app"]
