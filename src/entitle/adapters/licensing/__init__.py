"""Licenses from a vendor: keys on disk, the `entitle license` commands (signing is decided in
``entitle.domain.signatures``)."""
