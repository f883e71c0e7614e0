"""The influence app: a Gradio UI to trace bad predictions to training data.

It renders and routes only: every number comes from the `influence` API. Launch with
`python -m app` (the digits demo) or see `app.cli` for the options. Build one in Python:

    from app.session import Session
    from app.ui import build
    build(Session(setup)).launch()
"""
