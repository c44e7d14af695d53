"""``entitle dashboard`` and the feature graph's drawings: read-only views built from what the
user's own credentials may read (DESIGN "Dashboard and feature graph")."""
