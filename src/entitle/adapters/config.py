"""Operator configuration: the instance normalization table and friends, from YAML."""

from __future__ import annotations

from pathlib import Path

import yaml

from entitle.domain.normalization import DEFAULT_WEIGHTS, InstanceTable, InvalidNormalizationTable


def load_instance_table(path: str | None) -> InstanceTable:
    """Read ``{kind: units}`` (or a config file with a ``normalization:`` key); defaults when None."""
    if not path:
        return InstanceTable(dict(DEFAULT_WEIGHTS))
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read the normalization table: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("normalization"), dict):
        data = data["normalization"]
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of instanceKind to units")
    try:
        return InstanceTable({str(k): v for k, v in data.items()})
    except InvalidNormalizationTable as exc:
        raise ValueError(f"{path}: {exc}") from None
