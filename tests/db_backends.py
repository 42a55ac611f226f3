"""The store tests' databases: ``db_url`` runs a test on SQLite (a file in tmp_path) and on Postgres (a fresh database
on the cluster named by COMPRESSION_LAB_TEST_PG, dropped afterwards; skipped with the reason when it is unset).

``scripts/test.sh`` starts a throw-away cluster on a private socket and sets COMPRESSION_LAB_TEST_PG; by hand::

    D=$(mktemp -d); chown postgres $D    # as root; otherwise leave out runuser and chown
    runuser -u postgres -- /usr/lib/postgresql/15/bin/initdb -D $D/data -A trust -U postgres -E UTF8 --locale=C --no-sync
    runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D $D/data -w -o "-k $D -p 54329 -c listen_addresses=" \
        start
    export COMPRESSION_LAB_TEST_PG="postgresql+psycopg://postgres@/postgres?host=$D&port=54329"
"""

from __future__ import annotations

import contextlib
import os
import secrets

import pytest

PG_ENV = "COMPRESSION_LAB_TEST_PG"
BACKENDS = ["sqlite", "postgres"]


@contextlib.contextmanager
def fresh_postgres_database(base: str):
    """A new, empty database ``t_<random>`` on the cluster of ``base`` (a SQLAlchemy URL); its URL is yielded and the
    database dropped afterwards (connections still open to it are closed: ``WITH (FORCE)``)."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    name = "t_" + secrets.token_hex(8)
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            yield make_url(base).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as c:
                c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


def postgres_base() -> str:
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"Postgres: {PG_ENV} is unset (scripts/test.sh starts a throw-away cluster and sets it; see "
                    "tests/db_backends.py to start one by hand)")
    return base


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path):
    """A SQLAlchemy URL of an empty database: SQLite in tmp_path, or a fresh Postgres database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'h.db'}"
        return
    with fresh_postgres_database(postgres_base()) as url:
        yield url
