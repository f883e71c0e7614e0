"""The Trace tab: one prediction, its most harmful and most helpful training examples, and a
new input to predict and trace ("explain this input").

Clicking a training example opens it for review; the k most harmful can be flagged at once;
the trace downloads at full precision (raw scores too).
"""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pandas as pd

from influence_app import inputs
from influence_app.inputs import whole
from influence_app.session import Session, Trace
from influence_app.tabs.common import SIGN_NOTE, VERDICT_CHOICES, file_box, in_place, md_text, readable, shown_file, status_box
from influence_app.views import trace_summary


K_MAX = 30  # training examples per side a trace shows at most


def trace_tab(session: Session, view, k: int) -> SimpleNamespace:
    """Build the tab; returns its components and `show(trace)`, the values of `outputs`."""
    first = int(session.bad[0]) if len(session.bad) else 0
    with gr.Tab("Trace", id="trace"):
        with gr.Row():
            eval_id = inputs.Number(first, label="eval example", precision=0, elem_id="eval-id")
            k_slider = inputs.Slider(1, K_MAX, value=k, step=1, label="k (examples per side)",
                                     elem_id="k")
            trace_button = gr.Button("Trace", variant="primary")
        query, summary, probabilities = _prediction_row(view)
        gr.Markdown(md_text(SIGN_NOTE + " Click a training example to review it."))
        harmful_view = view.examples_component("most harmful training examples", elem_id="harmful-examples")
        harmful_table = gr.Dataframe(label="most harmful", interactive=False, wrap=True, elem_id="harmful-table")
        helpful_view = view.examples_component("most helpful training examples", elem_id="helpful-examples")
        helpful_table = gr.Dataframe(label="most helpful", interactive=False, wrap=True, elem_id="helpful-table")
        bulk = _bulk_flag_row(session)
        with gr.Accordion("Explain this input", open=False):
            new_input = view.input_component()
            with gr.Row():
                new_label = inputs.dropdown(["predicted"] + list(session.setup.class_names),
                                            value="predicted",
                                        label="attribute the loss of")
                explain_button = gr.Button("Predict and trace", variant="primary")
        with gr.Row():
            download = gr.Button("Download this trace (CSV, full precision)", size="sm")
            file = file_box("trace (CSV)", "trace-file")
        status = status_box("trace-status")
        last = gr.State(None)  # the shown trace's tables at full precision
    outputs = [query, summary, probabilities, harmful_view, harmful_table, helpful_view, helpful_table, last]

    def show(trace: Trace) -> tuple:
        both = pd.concat([trace.harmful.assign(kind="harmful"), trace.helpful.assign(kind="helpful")])
        return (view.show(trace.query), trace_summary(trace), trace.probabilities,
                view.show_examples(trace.harmful, "harmful"), _shown(trace.harmful),
                view.show_examples(trace.helpful, "helpful"), _shown(trace.helpful), both)

    @in_place(len(outputs))
    def trace(eval_id, k):
        return (*show(session.trace(eval_id, whole(k, "k", 1, K_MAX))), "")

    @in_place(len(outputs))
    def explain(value, label, k):
        return (*show(session.explain(view.parse(value), label, whole(k, "k", 1, K_MAX))), "")

    @in_place(1)
    def download_trace(last):
        if last is None:
            raise ValueError("trace a prediction first")
        return shown_file(session.download(last, "trace")), "the trace in the CSV (score = the raw influence score)"

    trace_button.click(trace, [eval_id, k_slider], [*outputs, status], api_name="trace")
    explain_button.click(explain, [new_input, new_label, k_slider], [*outputs, status], api_name="explain")
    download.click(download_trace, [last], [file, status], api_name="download_trace")
    return SimpleNamespace(eval_id=eval_id, k=k_slider, outputs=outputs, status=status, show=show, trace=trace,
                           harmful_table=harmful_table, helpful_table=helpful_table, last=last, bulk=bulk)


def _prediction_row(view) -> tuple:
    """The traced input (across the page for a table row, else beside), its prediction line and probabilities."""
    if view.wide_query:
        query = view.query_component("input", elem_id="trace-query")
    with gr.Row():
        if not view.wide_query:
            with gr.Column(scale=1):
                query = view.query_component("input", elem_id="trace-query")
        with gr.Column(scale=2):
            summary = gr.Textbox(show_label=False, container=False, interactive=False, elem_id="trace-summary")
            probabilities = gr.Label(label="predicted probabilities", num_top_classes=5)
    return query, summary, probabilities


def _shown(table: pd.DataFrame) -> pd.DataFrame:
    """The trace table as read: without the raw score (in the download), rounded."""
    return readable(table.drop(columns=["score"]))


def _bulk_flag_row(session: Session) -> SimpleNamespace:
    with gr.Row():
        verdict = inputs.dropdown(VERDICT_CHOICES, value=None,
                                  label="verdict for the k most harmful",
                              elem_id="bulk-verdict")
        corrected = inputs.dropdown([""] + list(session.setup.class_names), value=None,
                                    label="corrected label",
                                elem_id="bulk-corrected")
        replace = gr.Checkbox(False, label="replace hand-made verdicts", elem_id="bulk-replace")
        button = gr.Button("Flag the k most harmful", size="sm", elem_id="bulk-flag")
    return SimpleNamespace(verdict=verdict, corrected=corrected, replace=replace, button=button)
