"""Maintenance tools that are not part of percept_core (run with `python -m tools.<name>`)."""
