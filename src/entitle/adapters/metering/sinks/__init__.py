"""Usage sinks: where ledger records go after the ledger, at least once and in order.

One interface (:class:`Sink`), a real implementation per destination and an in-memory one for
tests, the way httpx pairs a transport with a mock transport.
"""

from entitle.adapters.metering.sinks.base import Sink, SinkError, default_name
from entitle.adapters.metering.sinks.factory import build_sink, build_sinks
from entitle.adapters.metering.sinks.memory import MemorySink

__all__ = ["Sink", "SinkError", "MemorySink", "build_sink", "build_sinks", "default_name"]
