"""The live side of a search: the model candidates are merged into in place (live.py), with the fused GPU
kernels (fused.py), spread over several GPUs (placement.py), and the data-flow hop models (dataflow.py)."""
