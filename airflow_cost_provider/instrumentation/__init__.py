"""Instrumentations: one module per source, patched lazily when the provider's module is imported.

They tag the work the task sends (SQL comments, labels, query tags) and record what it used into the
task's capture session; statistics they must look up are fetched once, batched, at finalize.
"""

from airflow_cost_provider.instrumentation.registry import instrument_all, uninstrument_all

__all__ = ["instrument_all", "uninstrument_all"]
