"""evomerge: evolutionary model merging.

Write a merge recipe (mergekit's YAML format) and run it, or let CMA-ES evolve the recipe against a fitness
function, then export the best one as an ordinary Hugging Face model.
"""

__version__ = "0.1.0"
