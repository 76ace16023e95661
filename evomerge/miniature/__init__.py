"""The offline miniature: SmolLM2-135M, two specialists fine-tuned from it, and generated task data."""
