"""API types of ``entitle.dev/v1alpha1``: the single source the CRDs are generated from."""

from entitle.api.common import GROUP, VERSION, API_VERSION, Condition, ObjectMeta
from entitle.api.license import (
    Burst, FeatureGrant, License, LicenseSpec, LicenseStatus, Pool, Rule, WorkloadCount,
)
from entitle.api.source import InstanceSource, InstanceSourceSpec, UsageAnchor
from entitle.api.workload import Workload, WorkloadSpec, WorkloadStatus

__all__ = [
    "GROUP", "VERSION", "API_VERSION", "Condition", "ObjectMeta",
    "Burst", "FeatureGrant", "License", "LicenseSpec", "LicenseStatus", "Pool", "Rule",
    "WorkloadCount", "Workload", "WorkloadSpec", "WorkloadStatus",
    "InstanceSource", "InstanceSourceSpec", "UsageAnchor",
]
