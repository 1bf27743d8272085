"""The ledger written out in other tools' formats (FOCUS)."""
