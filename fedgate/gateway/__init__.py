"""The server process: every registered transport adapter over one federation, one loop."""
