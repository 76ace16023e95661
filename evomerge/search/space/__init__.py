"""What a search varies: genomes, the parameter and data-flow search spaces, the data-flow genome."""
