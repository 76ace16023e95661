"""evomerge: evolutionary model merging.

Write a merge recipe (mergekit's YAML format) and run it, or let CMA-ES evolve the recipe against a fitness
function, then export the best one as an ordinary Hugging Face model.
"""

from evomerge.core.references import register_scheme

__version__ = "0.1.0"

# The package's own model-reference schemes, each imported only when a reference uses it (references.py).
register_scheme("builtin", "evomerge.miniature.builtins:builtin_model")
register_scheme("run", "evomerge.search.results:run_best_model")
