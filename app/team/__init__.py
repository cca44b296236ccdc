"""The team gateway: client keys and teams managed at run time, in a database (docs/design.md#team-gateway).

* `keys.py`: secrets, ids, durations, the JSON shapes of keys and teams;
* `db.py`: the engine (SQLite in WAL mode, or PostgreSQL) and the migrations run at start;
* `schema.py` and `migrations/`: the tables and their Alembic history;
* `store.py`: reading and changing keys and teams (the CLI and the admin API both use it);
* `cache.py`: the keys of the database held in memory for the request path, re-read every few seconds;
* `cli.py`: `gemini-proxy keys ...` and `gemini-proxy teams ...`.
"""
