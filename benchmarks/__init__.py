"""Benchmarks: scripts that print the tables the issues ask for (`python -m benchmarks.<name> [--json]`)."""
