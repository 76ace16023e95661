"""Recipes and the merge itself: the recipe schema (`recipe`), the method registry (`methods/`), recipe + models
-> one task per output tensor (`plan`), running a plan (`merge`, with the CPU kernels of `fused_cpu` and
`cpu_kernels`), the atomic Hugging Face folder (`export`, `direct_write`) and layer paths (`dataflow`)."""
