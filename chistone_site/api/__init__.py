"""The REST API for CI (`/api/v1/`): API keys, thin DRF views over the write services."""
