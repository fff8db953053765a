"""The Ray Data side of a run: pending units cut into blocks, and each unit's rows read."""
