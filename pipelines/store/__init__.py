"""The output folder: results committed once per unit (`output`), the records kept beside them
(`records`), and what is read back from both: the counts (`counts`), `status` and the `ledger`.
The unit protocol (pipelines/unit/protocol.py) stands on these."""
