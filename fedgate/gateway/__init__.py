"""The server process: REST and gRPC adapters over one Federation in one event loop."""
