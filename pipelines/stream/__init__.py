"""Streaming a run's units: one model's feed (model_feed.py), through Ray Data (ray_data.py: units cut
into blocks by unit_blocks.py, each unit's rows read by unit_rows.py) or warm engines
(pipelines/engine/warm_feed.py)."""
