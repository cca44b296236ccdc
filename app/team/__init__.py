"""The team gateway: client keys and teams managed at run time, in a database (docs/design.md#team-gateway).

* `keys.py`: secrets, ids, durations, the JSON shapes of keys and teams;
* `db.py`: the engine (SQLite in WAL mode, or PostgreSQL) and the migrations run at start;
* `schema.py` and `migrations/`: the tables and their Alembic history;
* `store.py`: reading and changing keys and teams (the CLI and the admin API both use it);
* `cache.py`: the keys of the database held in memory for the request path, re-read every few seconds;
* `cli.py`: `gemini-proxy keys ...` and `gemini-proxy teams ...`;
* `prices.py`: the dated Gemini price table (overridden by `pricing:`) and the cost of a request;
* `usage_store.py`: usage records and daily sums in the database, the totals, `spent()`, pruning;
* `usage_writer.py`: the queue, the writer task, the spool file for outages, retention;
* `usage_cli.py`: `gemini-proxy usage ...` (docs/team.md#usage-and-prices).
"""
