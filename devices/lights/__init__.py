"""Lights drivers."""
