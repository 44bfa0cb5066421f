"""Whole-command workflows behind the prune, distill and qat verbs (the CLI only parses and renders)."""
