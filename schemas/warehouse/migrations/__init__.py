"""Versioned warehouse migrations: Alembic revisions, applied in order by
`pipelines.warehouse.migrate` (`safewatch` at start) or by `alembic -c
pipelines/warehouse/alembic/alembic.ini upgrade head`.

Each module `mNNNN_<name>.py` defines `revision` ("NNNN"), `down_revision` (the revision
before it; None for the first), `DESCRIPTION` (one line, logged when it is applied) and
`upgrade(connection)`. A migration is frozen once released: change the schema by adding a
new one (`alembic ... revision --rev-id NNNN -m "<description>"`, docs/warehouse.md,
"Migrations"); tests/unit/test_warehouse_migrations.py holds the digest of every file.
Migrations use SQLAlchemy constructs or SQL written for each dialect, so they run on SQLite
and PostgreSQL alike, and have no downgrade.
"""
