"""OpenLineage names of datasets (https://openlineage.io/docs/spec/naming), through the client's
naming helpers: SQL tables, REST endpoints, lake and object-store locations, MLflow.

- SQL sources: ``postgres://host:port`` / ``mysql://host:port`` with ``db.schema.table`` /
  ``db.table``; SQLite ``sqlite://<file path>`` with the table name;
- REST sources: ``https://host[:port]`` with the endpoint path;
- file sources and the lake: ``s3://bucket`` with the key prefix, or ``file`` with the absolute
  path; a lake dataset is one snapshot folder (``<lake>/<zone>/<pipeline>/<dataset>/<snapshot id>``);
- MLflow: ``mlflow://<tracking host>`` with ``runs/<run id>`` and ``models/<name>/<version>``.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit


def lake_location(uri: str) -> tuple[str, str]:
    """A lake or object-store location as an OpenLineage ``(namespace, name)``."""
    from openlineage.client.naming.dataset import S3, LocalFileSystem

    if uri.startswith(("s3://", "s3a://")):
        bucket, _, key = uri.split("://", 1)[1].partition("/")
        naming: Any = S3(bucket_name=bucket, object_key=key.strip("/") or "/")
    else:
        path = urlsplit(uri).path if uri.startswith("file://") else uri
        naming = LocalFileSystem(path=os.path.abspath(path))
    return naming.get_namespace(), naming.get_name()


def location_uri(namespace: str, name: str) -> str:
    """The URI a dataset's ``dataSource`` facet names: the full location."""
    if namespace == "file":
        return f"file://{name}"
    if namespace.startswith(("s3://", "http://", "https://")):
        return f"{namespace.rstrip('/')}/{name.lstrip('/')}"
    return namespace


def sql_location(url: Any, table: str, db_schema: str | None = None) -> tuple[str, str]:
    """A SQL table as ``(namespace, name)`` from its SQLAlchemy URL (credentials never used)."""
    import sqlalchemy as sa
    from openlineage.client.naming.dataset import MySQL, Postgres

    url = sa.make_url(url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        return f"sqlite://{os.path.abspath(url.database or '')}", table
    if backend == "postgresql":
        naming: Any = Postgres(
            host=url.host or "localhost",
            port=str(url.port or 5432),
            database=url.database or "postgres",
            schema=db_schema or "public",
            table=table,
        )
        return naming.get_namespace(), naming.get_name()
    if backend in ("mysql", "mariadb"):
        database = db_schema or url.database or ""
        naming = MySQL(
            host=url.host or "localhost", port=str(url.port or 3306), database=database, table=table
        )
        return naming.get_namespace(), naming.get_name()
    host = f"{url.host}:{url.port}" if url.port else (url.host or "localhost")
    return f"{backend}://{host}", ".".join(p for p in (url.database, db_schema, table) if p)


def http_location(url: str, endpoint: str) -> tuple[str, str]:
    """A REST endpoint as ``(scheme://host[:port], /endpoint)``; user info and query are dropped."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return f"{parts.scheme or 'https'}://{netloc}", endpoint


def mlflow_namespace(tracking_uri: str) -> str:
    """``mlflow://<tracking host>``: the server's host and port; ``local`` for a file/SQL store."""
    parts = urlsplit(tracking_uri or "")
    if parts.scheme in ("http", "https") and parts.hostname:
        return f"mlflow://{parts.hostname}:{parts.port}" if parts.port else f"mlflow://{parts.hostname}"
    if parts.scheme.startswith("databricks"):
        return "mlflow://databricks"
    return "mlflow://local"
