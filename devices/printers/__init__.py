"""Printers drivers."""
