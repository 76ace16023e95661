"""evomerge: evolutionary model merging.

Write a merge recipe (mergekit's YAML format) and run it, or let CMA-ES evolve the recipe against a fitness
function, then export the best one as an ordinary Hugging Face model.
"""

from evomerge.commands.schemes import register_schemes

__version__ = "0.1.0"

register_schemes()  # `builtin:` and `run:` model references (commands/schemes.py)
