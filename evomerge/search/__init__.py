"""Evolutionary search over merge recipes: config, genome, optimiser backends, run store, loop."""
