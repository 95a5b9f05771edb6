"""The gRPC adapter: an asyncio server over a Federation, and a client Transport."""
