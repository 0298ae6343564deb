"""Placeholder: filled in by the image helper."""
