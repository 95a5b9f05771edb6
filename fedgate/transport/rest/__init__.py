"""The REST adapter: FastAPI routes over a Federation, and an aiohttp client Transport."""
