"""Versioned warehouse migrations, applied in order by `pipelines.warehouse.migrate`.

Each module `mNNNN_<name>.py` defines `VERSION` (int), `DESCRIPTION` (str) and
`upgrade(connection)`. A migration is frozen once released: change the schema by adding a new
one. Migrations use SQLAlchemy constructs only, so they run on SQLite and PostgreSQL alike.
"""
