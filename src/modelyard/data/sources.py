"""The registry of data sources, keyed by the scheme of `data.source` (builtin names by their own key)."""

from modelyard.registry import Registry

SOURCES: Registry = Registry("data source")
register_source = SOURCES.register
