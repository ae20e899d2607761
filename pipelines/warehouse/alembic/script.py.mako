<%! import json %>\
"""${message}"""

from __future__ import annotations

from sqlalchemy.engine import Connection

revision = ${json.dumps(up_revision)}
down_revision = ${json.dumps(down_revision) if down_revision else "None"}
DESCRIPTION = ${json.dumps(message, ensure_ascii=False)}


def upgrade(connection: Connection) -> None:
    # SQLAlchemy constructs, or SQL written for each connection.dialect.name ("sqlite",
    # "postgresql"), as in the migrations before; nothing imported from pipelines/ (a
    # migration keeps frozen copies of the lists it needs).
    raise NotImplementedError
