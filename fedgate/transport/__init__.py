"""Transport adapters. `Transport` (the client seam) is defined in the core."""

from fedgate.core.transport import Session, Transport

__all__ = ["Session", "Transport"]
