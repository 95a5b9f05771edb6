"""fedgate: federated learning with one transport-agnostic core behind gRPC and REST."""

__version__ = "0.1.0"
