"""Operators of the cost provider."""
