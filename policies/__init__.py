"""Prompt policies, one module per method."""
