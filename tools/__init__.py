"""Helpers that run the project from a checkout (bootstrap, the check command)."""
