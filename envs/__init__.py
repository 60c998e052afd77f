"""Gymnasium environments for prompt construction."""
