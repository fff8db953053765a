import cluster  # noqa: F401  (its notices quieted before Ray is imported)
