"""Usage metering I/O: the ledger, sinks and their pumps, export."""
