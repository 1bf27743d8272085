"""Budgets: a YAML file of spending limits per scope and period, evaluated against the cost ledger.

model.py loads and validates the file, periods.py says when a period starts and ends, evaluate.py
reads what a budget's scope spent, forecasts the period's end and finds anomalies, settled.py keeps
the spend that can no longer change between evaluations."""
