"""Metrics, volume translation, reports and figures."""
