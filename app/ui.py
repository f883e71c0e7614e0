"""The Gradio page: one function per tab (`app.tabs.*`) and the routes between the tabs.

Tabs: Predictions (every eval prediction, filtered, searched, paged; click a row to trace it),
Trace (most harmful and helpful training examples; click one to review it), Review (rank,
review, flag, export flags), Groups (harm by a metadata column, flag a group) and Regression
when opened on a report folder (click a regression to trace it).

Every handler is also an API endpoint (`api_name`), so `gradio_client` can drive the app;
each returns a status line last, where our error messages and the attributor's warnings
appear in place (the other outputs keep their values).
"""

from __future__ import annotations

import gradio as gr

from influence_app.inputs import boolean
from influence_app.session import Session
from influence_app.tabs.common import bulk_status, clicked, in_place, md_text
from influence_app.tabs.groups import groups_tab
from influence_app.tabs.predictions import predictions_tab
from influence_app.tabs.regression import regression_tab
from influence_app.tabs.review import review_outputs, review_tab, row_opener
from influence_app.tabs.trace import trace_tab
from influence_app.views import ImageView, TableView, view_for


# Table headers never break inside a word (a narrow column scrolls instead of wrapping "c/o/l"),
# and wide tables scroll sideways rather than cutting their last columns.
CSS = """
.gradio-container th .header-content span {
  white-space: nowrap !important; word-break: keep-all !important;
}
.gradio-container .table-wrap { overflow-x: auto !important; }
"""


def header(session: Session) -> str:
    from influence.report.readable import sig

    s = session.summary()
    lines = [f"### {md_text(s['name'])}",
             md_text(f"{s['n_train']} training examples · {s['n_eval']} eval examples, {s['wrong']} predicted wrong · "
                     f"method {s['method']} · curvature backend {s['curvature_backend']} · damping "
                     f"{sig(s['damping']) if isinstance(s['damping'], (int, float)) else 'n/a'}")]
    if s["notes"]:
        lines.append(md_text(s["notes"]))
    return "\n\n".join(lines)


def build(session: Session, k: int = 8, max_upload_bytes: int = 10 * 1024 * 1024) -> gr.Blocks:
    """The `gr.Blocks` app for `session` (not launched); larger uploads than `max_upload_bytes`
    are refused."""
    view = view_for(session)
    view.max_upload_bytes = max_upload_bytes
    with gr.Blocks(title=f"influence · {session.setup.name}", analytics_enabled=False) as page:
        gr.Markdown(header(session))
        first = "regression" if session.setup.report is not None else "predictions"
        with gr.Tabs(selected=first) as tabs:
            predictions = predictions_tab(session, view)
            trace = trace_tab(session, view, k)
            review = review_tab(session, view)
            groups = groups_tab(session, view)
            regression = regression_tab(session)
        _route_traces(session, tabs, predictions, trace, regression)
        _route_reviews(session, view, tabs, trace, review, groups, regression)
        page.load(predictions.load, predictions.filters, [predictions.table, predictions.count, predictions.status],
                  api_visibility="private")
        page.load(trace.trace, [trace.eval_id, trace.k], [*trace.outputs, trace.status], api_visibility="private")
        page.load(session.flag_table, None, review.flags, api_name="flags")
    return page


def _route_traces(session: Session, tabs, predictions, trace, regression) -> None:
    """A click on a prediction (or a report's regression) traces it in the Trace tab."""

    def tracer(status_count: int):
        @in_place(status_count)
        def trace_row(k, evt: gr.SelectData):
            j = clicked(evt, 0)
            return (j, gr.Tabs(selected="trace"), *trace.show(session.trace(j, int(k))), "")

        return trace_row

    outputs = [trace.eval_id, tabs, *trace.outputs, trace.status]
    predictions.table.select(tracer(len(outputs) - 1), [trace.k], outputs, api_visibility="private")
    if regression is not None:
        regression.regressions.select(tracer(len(outputs) - 1), [trace.k], outputs, api_visibility="private")


def _route_reviews(session: Session, view, tabs, trace, review, groups, regression) -> None:
    """A click on a training example anywhere opens it in the Review tab; the k most harmful of
    a trace can be flagged from the Trace tab."""
    outputs = [*review_outputs(review), tabs, review.status]
    trace.harmful_table.select(row_opener(review, 1), None, outputs, api_visibility="private")
    trace.helpful_table.select(row_opener(review, 1), None, outputs, api_visibility="private")
    review.suspects.select(row_opener(review, 0), None, outputs, api_visibility="private")
    groups.members.select(row_opener(review, 0), None, outputs, api_visibility="private")
    if regression is not None:
        regression.suspects.select(row_opener(review, 0), None, outputs, api_visibility="private")
    if isinstance(view, TableView):  # the ranked rows (train id first) open too
        trace.outputs[3].select(row_opener(review, 0), None, outputs, api_visibility="private")
        trace.outputs[5].select(row_opener(review, 0), None, outputs, api_visibility="private")
    if isinstance(view, ImageView):  # gallery thumbnails are clickable too
        trace.outputs[3].select(_gallery_opener(review, "harmful"), [trace.last], outputs, api_visibility="private")
        trace.outputs[5].select(_gallery_opener(review, "helpful"), [trace.last], outputs, api_visibility="private")

    @in_place(1)
    def flag_top(last, verdict, corrected, replace):
        if last is None:
            raise ValueError("trace a prediction first")
        ids = [int(i) for i in last[last["kind"] == "harmful"]["train id"]]
        replace = boolean(replace, "replace hand-made verdicts")
        outcome = session.flag(ids, verdict, corrected, bulk=True, replace_hand_made=replace)
        return session.flag_table(), bulk_status(outcome, f"of the {len(ids)} most harmful",
                                                 verdict)

    bulk = trace.bulk
    bulk.button.click(flag_top, [trace.last, bulk.verdict, bulk.corrected, bulk.replace],
                      [review.flags, trace.status], api_name="flag_top")
    groups.flag.click(session.flag_table, None, review.flags, api_visibility="private")


def _gallery_opener(review, kind: str):
    @in_place(len(review_outputs(review)) + 1)
    def open_image(last, evt: gr.SelectData):
        if last is None:
            raise ValueError("trace a prediction first")
        ids = [int(i) for i in last[last["kind"] == kind]["train id"]]
        return (*review.open(ids[int(evt.index)]), gr.Tabs(selected="review"), "")

    return open_image
