"""The influence app: a Gradio UI to trace bad predictions to training data.

It renders and routes only: every number comes from the `influence` API. Launch with
`python -m influence_app` (the digits demo) or see `influence_app.cli` for the options. Build one in Python:

    from influence_app.session import Session
    from influence_app.ui import build
    build(Session(setup)).launch()
"""
