"""The REST adapter: FastAPI routes over a Federation, and an httpx client Transport."""
