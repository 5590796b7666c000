"""The merge engine: recipes planned into per-tensor jobs, streamed through a method, written as shards."""
