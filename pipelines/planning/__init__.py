"""Planning a run before any engine starts, read top to bottom in plan_run.py: the paths kept
apart, the models pinned, the input resolved, its shards listed and pinned (inputs.py), the work
fingerprinted and split into units (units.py), the manifest written; beside them the routes
(routing.py), the run's date (schedule.py) and moving an earlier run aside (start_over.py)."""
