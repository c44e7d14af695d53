"""``entitle usage push``: hourly meter quantities to Stripe, Lago or OpenMeter, with
idempotency keys and receipts (DESIGN "Billing delivery")."""
