"""Optimisers behind one interface (CMA-ES, Optuna samplers), multi-objective ranking and quality-diversity archives."""
