"""Running a search: the driver, its executors (local, Ray)."""
