"""Errors of the metering CLIs, importable without the export machinery."""


class ExportError(Exception):
    """The export's input or arguments are unusable; the message names where."""
