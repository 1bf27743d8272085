"""The cost ledger: its own database (SQLite by default, PostgreSQL in production)."""
