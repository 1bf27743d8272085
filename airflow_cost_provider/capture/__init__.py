"""Capturing what a task try used: sessions, worker process usage, hook lineage, safety helpers."""
