"""Opening models: source folders, shards and GGUF files read lazily (`models`), LoRA adapters folded in as
tensors are read (`lora`), and a finished model loaded for evaluation (`loading`)."""
