"""Scenarios, baselines and sweeps on Flower's simulation engine."""
