-- Runs once, when the ledger-db volume is first created. The ledger itself (database cost_ledger,
-- user cost) comes from the image's POSTGRES_* settings; the provider creates its tables.
--
-- shop: a small database of its own for the example_postgres DAG (connection postgres_default),
-- so that DAG runs in docker compose without any cloud account.
CREATE ROLE shop LOGIN PASSWORD 'shop';
CREATE DATABASE shop OWNER shop;
