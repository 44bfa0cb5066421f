"""Model → model passes (prune, distill, QAT); each is a config object plus ``apply(handle, config, data) -> handle``."""
