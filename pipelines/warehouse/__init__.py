"""Warehouse access through SQLAlchemy: engine, migrations, the batch sink and read queries."""
