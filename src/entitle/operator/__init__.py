"""Operator wiring: Kopf handlers, the webhook server, background loops. Thin by design."""
