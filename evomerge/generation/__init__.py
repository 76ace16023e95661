"""Greedy generation for generative fitness: plain `generate` (greedy.py) and the fast engine (engine.py), which
runs Llama-family models, live merges and data-flow hop models (through `architecture.ScaledLayer`) with
continuous batching over its own KV cache."""
