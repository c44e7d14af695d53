"""Kubernetes API access: clients (blocking and aiohttp), leases, capacity holds, watches."""
