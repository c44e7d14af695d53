"""What applications import: standard library only, nothing of the operator (import-linter
keeps it so), so an app can use it without the operator's dependencies."""
