"""Alembic environment: runs on the connection app/team/db.py hands over (`config.attributes["connection"]`).

The gateway migrates at start from inside its event loop, so this never makes
an engine of its own: db.py opens an async connection and calls Alembic through
`run_sync` (Alembic's "connection sharing" recipe).
"""

from __future__ import annotations

from alembic import context

from app.team.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the migrations through app.team.db.migrate (gemini-proxy serve / keys do it)")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
