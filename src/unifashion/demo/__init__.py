"""`make demo`: the main job on the synthetic benchmark, one stage per task (pipeline.py chains them)."""
