"""The Mergeling Space: a Gradio app over `registry` to try, compare, merge and submit models.

Modules (everything but `app` works without Gradio and is unit-tested on its own):
- `config`: `SpaceConfig`, what the app is pointed at (Hub, registry repo, bot URL, limits).
- `catalog_view`: the catalog read once per refresh: languages, merges and their lineage.
- `leaderboard`: eval results from the catalog and the cards' model-index; tables and plot data.
- `models`: the memory-bounded LRU of loaded models and the up-front size check.
- `generation`: prompt checks and token streaming.
- `merge_preview`: a lab-size merge run in the Space, with its diagnostics per layer.
- `bot_client`: the bot's HTTP API (`POST /jobs`, `GET /jobs`), over HTTP only.
- `submit`: checks a CT repo before it is handed to the bot.
- `frames`: tables and plot data as pandas frames (column types, colour categories).
- `services`: the handlers the app wires to its events (plain values in, plain values out).
- `app`: `build_app()` (Gradio Blocks) and the module-level `demo` for Hugging Face Spaces.
- `cli`: `registry space`.
"""
