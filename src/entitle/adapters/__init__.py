"""Adapters: thin layers between the pure domain and the outside world (YAML, HTTP, SQLite, CLI)."""
