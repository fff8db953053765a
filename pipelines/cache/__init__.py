"""The response cache: identical requests answered once, across runs, with its compaction."""
