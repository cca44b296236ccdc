"""Alembic migrations of the team gateway's database, shipped inside the package (app/team/db.py runs them)."""
