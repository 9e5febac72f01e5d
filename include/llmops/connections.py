"""Credentials come from Airflow Connections only; these helpers turn one into a client setting.

Nothing here logs or returns a secret in a message: errors name the connection id, never its URI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlalchemy as sa


class ConnectionConfigError(ValueError):
    """A connection is missing or cannot be used for the source that names it."""


def get_connection(conn_id: str) -> Any:
    """Look up an Airflow connection (env vars, secrets backend or metadata DB)."""
    from airflow.sdk import BaseHook

    try:
        return BaseHook.get_connection(conn_id)
    except Exception as exc:  # AirflowNotFoundException, backend errors
        raise ConnectionConfigError(
            f"Airflow connection '{conn_id}' is not defined or cannot be read ({type(exc).__name__}); "
            f"create it in the UI (Admin > Connections) or as env var AIRFLOW_CONN_{conn_id.upper()}"
        ) from None


_SQLA_DRIVERS = {
    # psycopg 3: its COPY streaming is the PostgreSQL fast path of the SQL extractor.
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
}


def sqlalchemy_url(conn: Any) -> sa.URL:
    """SQLAlchemy URL for a database connection (sqlite, postgres, mysql/mariadb, or extra.sqlalchemy_url)."""
    import sqlalchemy as sa

    extra = conn.extra_dejson or {}
    if extra.get("sqlalchemy_url"):
        return sa.make_url(extra["sqlalchemy_url"])
    conn_type = (conn.conn_type or "").lower()
    if conn_type == "sqlite":
        path = conn.host or conn.schema
        if not path:
            raise ConnectionConfigError(
                f"connection '{conn.conn_id}': a sqlite connection needs the file path as host"
            )
        return sa.URL.create("sqlite", database=path)
    driver = _SQLA_DRIVERS.get(conn_type)
    if driver is None:
        raise ConnectionConfigError(
            f"connection '{conn.conn_id}': conn_type '{conn_type}' is not a supported database "
            f"(sqlite, postgres, mysql, mariadb; or set extra.sqlalchemy_url)"
        )
    return sa.URL.create(
        driver,
        username=conn.login or None,
        password=conn.password or None,
        host=conn.host or None,
        port=conn.port or None,
        database=conn.schema or None,
    )


def engine_for(conn_id: str) -> sa.Engine:
    """A SQLAlchemy engine for a database connection (pings before reuse)."""
    import sqlalchemy as sa

    return sa.create_engine(sqlalchemy_url(get_connection(conn_id)), pool_pre_ping=True)


def read_only_engine(url: Any) -> sa.Engine:
    """An engine whose every session is read-only: extraction never writes to a source, whatever
    its query says (the spec check refuses writing statements; this refuses what slips past it,
    e.g. a function with side effects or `SELECT ... FOR UPDATE`)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url, future=True, pool_pre_ping=True)
    sa.event.listen(engine, "connect", _read_only_session(engine.dialect.name))
    return engine


_READ_ONLY = {
    "postgresql": "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
    "mysql": "SET SESSION TRANSACTION READ ONLY",
    "mariadb": "SET SESSION TRANSACTION READ ONLY",
    "sqlite": "PRAGMA query_only = ON",
}


def _read_only_session(dialect: str) -> Any:
    """A pool `connect` hook that makes a new DBAPI connection's session read-only."""
    import logging

    statement = _READ_ONLY.get(dialect)

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        if statement is None:
            logging.getLogger(__name__).warning(
                "%s sources are not read in a read-only session (no known statement)", dialect
            )
            return
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(statement)
        finally:
            cursor.close()
        if dialect != "sqlite":
            dbapi_connection.commit()  # ends the driver's implicit transaction; the setting stays

    return on_connect


def http_base_url(conn: Any) -> str:
    host = (conn.host or "").rstrip("/")
    if not host:
        raise ConnectionConfigError(f"connection '{conn.conn_id}': the HTTP connection needs a host")
    if "://" in host:
        return host
    scheme = conn.schema or "https"
    port = f":{conn.port}" if conn.port else ""
    return f"{scheme}://{host}{port}"


def http_auth_headers(conn: Any) -> dict[str, str]:
    """Headers for the connection's auth: bearer token (password) or an API-key header (extra)."""
    extra = conn.extra_dejson or {}
    auth = extra.get("auth", "bearer" if conn.password else "none")
    if auth == "none":
        return {}
    if not conn.password:
        raise ConnectionConfigError(
            f"connection '{conn.conn_id}': auth '{auth}' needs the secret as password"
        )
    if auth == "bearer":
        return {"Authorization": f"Bearer {conn.password}"}
    if auth == "api_key":
        return {extra.get("header", "X-API-Key"): conn.password}
    if auth == "basic":
        import base64

        token = base64.b64encode(f"{conn.login or ''}:{conn.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}
    raise ConnectionConfigError(
        f"connection '{conn.conn_id}': unknown auth '{auth}' (bearer, api_key, basic, none)"
    )
