"""Benchmarks of DESIGN.md §6: run by hand with ``python -m bench`` (see bench/README.md)."""
