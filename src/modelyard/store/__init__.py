"""The model registry and API keys: SQLite under MODELYARD_HOME, or PostgreSQL through MODELYARD_DB_URL."""
