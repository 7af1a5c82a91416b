"""Scanners drivers."""
