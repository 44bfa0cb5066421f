"""One module per verb (or verb group); each exposes ``register(app)``. cli.py finds them all."""
