"""Scales drivers."""
