"""Planning a run before any engine starts: the input's shards found and pinned, the work
fingerprinted and split into units, the paths kept apart, the routes and the run's date."""
