"""Placeholder: filled in by the text helper."""
