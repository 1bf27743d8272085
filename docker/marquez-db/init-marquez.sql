-- Runs once, when the marquez-db volume is first created: the database and user Marquez's bundled
-- configuration expects (database marquez, user marquez, password marquez).
CREATE ROLE marquez LOGIN PASSWORD 'marquez';
CREATE DATABASE marquez OWNER marquez;

-- Marquez creates its tables in schema public on start-up. PostgreSQL 15 and later no longer let
-- every user create objects in public, so grant it explicitly: the same script then works whichever
-- PostgreSQL version runs here.
\connect marquez
GRANT ALL ON SCHEMA public TO marquez;
