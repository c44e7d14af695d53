"""The entitlement engine: pure functions over the API types. No I/O, no clock, no Kopf.

Time is always passed in (``now``); everything here can be unit-tested without a server.
"""
