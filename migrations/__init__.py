"""Alembic migrations of the zooens registry."""
