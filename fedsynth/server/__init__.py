"""Flower ServerApp, run directory, checkpoints and the final report."""
