"""One builder per tab of the Space (`build(ctx)` lays the tab out and wires its events).

These modules import Gradio at the top, so only `space.app.build_app` imports them; the logic they
call lives in Gradio-free modules (`space.services` and below).
"""
