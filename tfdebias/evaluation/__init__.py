"""Metrics, evaluation protocols, results tables and plots."""
