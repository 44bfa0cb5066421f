"""Toy extensions, each one module registered by one call from tests/test_extension_points.py."""
