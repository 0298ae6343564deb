"""Placeholder: filled in by the table helper."""
