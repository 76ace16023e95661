"""What a run keeps: the run store, its results and exports, streaming to trackers."""
