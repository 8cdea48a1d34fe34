"""Defences: secure aggregation, differential privacy, output hardening, model-consistency check."""
