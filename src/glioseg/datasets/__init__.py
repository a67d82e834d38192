"""Datasets: layout adapters and the synthetic sample."""
