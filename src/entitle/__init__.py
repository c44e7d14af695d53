"""entitle: software entitlements enforced at Kubernetes admission, metered for billing."""

__version__ = "0.1.0"
