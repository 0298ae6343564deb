"""The registry database: SQLite under MODELYARD_HOME by default, any SQLAlchemy URL (PostgreSQL) through
MODELYARD_DB_URL, so several servers can share one registry.

The schema is versioned: `MIGRATIONS[i]` takes the schema from version i to i + 1, and `connect` applies the
missing ones in one transaction. (Alembic would add an environment and a scripts folder for what is, so far,
a few CREATE TABLE statements; the table `schema_version` plays its part.)
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine

from modelyard.errors import ModelyardError


class RegistryError(ModelyardError):
    """A registry operation that cannot be done as asked (unknown model, revoked key, hash mismatch, ...)."""


MIGRATIONS: list[list[str]] = [
    [  # 1: model versions, API keys, usage per key
        """CREATE TABLE model_versions (
            {id}, name VARCHAR(200) NOT NULL, version INTEGER NOT NULL,
            run_path TEXT NOT NULL, weights_sha256 CHAR(64) NOT NULL, metrics TEXT NOT NULL,
            stage VARCHAR(20) NOT NULL DEFAULT 'none', created_by VARCHAR(200) NOT NULL,
            created_at VARCHAR(40) NOT NULL, UNIQUE (name, version))""",
        """CREATE TABLE api_keys (
            {id}, name VARCHAR(200) NOT NULL, key_sha256 CHAR(64) NOT NULL UNIQUE,
            prefix VARCHAR(20) NOT NULL, created_at VARCHAR(40) NOT NULL, revoked_at VARCHAR(40))""",
        """CREATE TABLE usage (
            key_id INTEGER PRIMARY KEY REFERENCES api_keys(id), requests BIGINT NOT NULL DEFAULT 0,
            predictions BIGINT NOT NULL DEFAULT 0, compute_ms DOUBLE PRECISION NOT NULL DEFAULT 0,
            last_used VARCHAR(40))""",
    ],
    [  # 2: where a version's files are kept in the artifact store (NULL: an older row that holds only run_path)
        "ALTER TABLE model_versions ADD COLUMN artifact TEXT",
    ],
    [  # 3: per-key limits (NULL: none) and each key's predictions per calendar month (UTC) against its quota
        "ALTER TABLE api_keys ADD COLUMN rate_per_s DOUBLE PRECISION",
        "ALTER TABLE api_keys ADD COLUMN burst INTEGER",
        "ALTER TABLE api_keys ADD COLUMN monthly_quota BIGINT",
        """CREATE TABLE quota_use (
            key_id INTEGER NOT NULL REFERENCES api_keys(id), month CHAR(7) NOT NULL,
            predictions BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (key_id, month))""",
    ],
    [  # 4: inputs explained per key (POST /v1/models/NAME/explain), billed apart from predictions
        "ALTER TABLE usage ADD COLUMN explanations BIGINT NOT NULL DEFAULT 0",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)


def home() -> Path:
    return Path(os.environ.get("MODELYARD_HOME", Path.home() / ".modelyard")).expanduser()


def database_url() -> str:
    url = os.environ.get("MODELYARD_DB_URL")
    if url:
        return url
    folder = home()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'registry.db'}"


ID_COLUMN = {"sqlite": "id INTEGER PRIMARY KEY", "postgresql": "id SERIAL PRIMARY KEY"}


ENV_TIMEOUT = "MODELYARD_DB_TIMEOUT"


def busy_timeout_s() -> float:
    """How long a write waits for another writer's lock on the SQLite registry before it fails: 30 s, or
    MODELYARD_DB_TIMEOUT seconds."""
    value = os.environ.get(ENV_TIMEOUT, "30")
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 3600:
        raise RegistryError(f"{ENV_TIMEOUT}={value!r}: give the seconds a registry write waits for a lock, "
                            "from 0 to 3600 (default 30)")
    return seconds


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    dbapi_conn.isolation_level = None  # SQLAlchemy's recipe: we emit BEGIN ourselves (see _sqlite_begin)
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writer; concurrent CLIs and servers
    cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_s() * 1000)}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_begin(conn) -> None:
    # BEGIN IMMEDIATE takes the write lock at the start, so two processes registering at once queue instead of
    # both reading the same "latest version" and one failing at commit. A read (see `reading`) begins deferred:
    # in WAL mode it never waits for a writer, so checking an API key works while a writer holds the lock.
    conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get("modelyard_read") else "BEGIN IMMEDIATE")


_ENGINES: dict[str, Engine] = {}


def connect(url: str | None = None) -> Engine:
    """An engine on the registry, its schema migrated to the current version."""
    url = url or database_url()
    if url.startswith("postgresql://"):  # the driver modelyard installs: psycopg 3
        url = url.replace("postgresql://", "postgresql+psycopg://", 1)
    if url in _ENGINES:
        return _ENGINES[url]
    busy_timeout_s()  # a bad MODELYARD_DB_TIMEOUT fails here, with its own message
    try:
        engine = create_engine(url, future=True, pool_pre_ping=True)
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
            event.listen(engine, "begin", _sqlite_begin)
        migrate(engine)
    except ModelyardError:
        raise
    except Exception as exc:  # a wrong URL, a server that is down, a folder we cannot write
        shown = url.split("@")[-1] if "@" in url else url  # never print a password
        raise RegistryError(f"cannot open the model registry at {shown}: {exc.__class__.__name__}: {exc}. "
                            "Check MODELYARD_DB_URL (or MODELYARD_HOME for the default SQLite file)") from None
    _ENGINES[url] = engine
    return engine


def reading(url: str | None = None) -> Connection:
    """A connection for reads only (`with reading(url) as conn:`); it never waits for a writer's lock on SQLite."""
    return connect(url).connect().execution_options(modelyard_read=True)


def migrate(engine: Engine) -> int:
    """Apply the migrations this database lacks; returns the schema version."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":  # two servers starting at once migrate one after the other
            conn.execute(text("SELECT pg_advisory_xact_lock(7240041)"))
        conn.execute(text("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"))
        row = conn.execute(text("SELECT version FROM schema_version")).first()
        current = row[0] if row else 0
        if current > SCHEMA_VERSION:
            raise RegistryError(f"the registry's schema is version {current}, newer than this modelyard knows "
                                f"({SCHEMA_VERSION}); upgrade modelyard")
        id_column = ID_COLUMN.get(engine.dialect.name, ID_COLUMN["postgresql"])
        for statements in MIGRATIONS[current:]:
            for sql in statements:
                conn.execute(text(sql.replace("{id}", id_column)))
        if row is None:
            conn.execute(text("INSERT INTO schema_version (version) VALUES (:v)"), {"v": SCHEMA_VERSION})
        elif current < SCHEMA_VERSION:
            conn.execute(text("UPDATE schema_version SET version = :v"), {"v": SCHEMA_VERSION})
    return SCHEMA_VERSION
