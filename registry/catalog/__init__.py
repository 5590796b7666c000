"""The registry catalog: CT checkpoints, SFT checkpoints and merges, stored on a Hub dataset repo.

Modules:
- `entries`: the frozen entry models, their stable IDs and JSON form.
- `pairing`: which CT × SFT pairs can be merged, and why not (pure).
- `store`: the dataset repo, one JSON file per entry, optimistic concurrency via parent commits.
- `verify`: resolve revisions and read config.json on the Hub before an entry is recorded.
- `seed`: `add --from FILE` (e.g. recipes/registry-seed.yaml).
- `sync`: discover checkpoints from model-card metadata (tags `mergeling-ct` / `mergeling-sft`).
"""
