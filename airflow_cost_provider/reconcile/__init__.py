"""Reconciliation: the bill (cost_billing_costs) split over the ledger lines that caused it, with what
no task used named as idle or unattributed (see README, "Reconciliation")."""
