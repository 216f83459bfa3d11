"""Stackless Python API on top of _continuation (work in progress)."""
