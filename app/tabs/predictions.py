"""The Predictions tab: every eval prediction, filtered, searched and paged, worst first.

Clicking a row traces it (the route lives in `app.ui`); the page as shown and every matching
prediction at full precision can be downloaded.
"""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from influence_app import inputs
from influence_app.inputs import real, whole
from influence_app.session import PAGE_SIZES, Session
from influence_app.tabs.common import file_box, in_place, shown_file, status_box, thumbnail_datatypes, with_thumbnails


def predictions_tab(session: Session, view) -> SimpleNamespace:
    """Build the tab's components and its own events; returns the components other tabs route to."""
    classes = ["all"] + list(session.setup.class_names)
    with gr.Tab("Predictions", id="predictions"):
        with gr.Row():
            true_class = inputs.dropdown(classes, value="all", label="true class")
            predicted_class = inputs.dropdown(classes, value="all", label="predicted class")
            correctness = inputs.Radio(["wrong", "right", "all"], value="wrong",
                                       label="predictions")
            min_loss = inputs.Number(0.0, label="loss at least", elem_id="min-loss")
        with gr.Row():
            search = gr.Textbox("", label="search: an eval id, or text in a class or a column", elem_id="search")
            page = inputs.Number(1, label="page", precision=0, elem_id="page")
            page_size = inputs.dropdown(list(PAGE_SIZES), value=50, label="rows per page")
            show = gr.Button("Show", variant="primary")
        count = gr.Textbox(show_label=False, container=False, interactive=False, elem_id="predictions-count")
        gr.Markdown("Worst (highest loss) first. Click a row to trace it to the training data.")
        table = gr.Dataframe(label="eval predictions", interactive=False, wrap=True, max_height=560,
                             datatype=thumbnail_datatypes(session.columns_of("predictions"), view, "eval id"),
                             elem_id="predictions-table")
        with gr.Row():
            download = gr.Button("Download all matching predictions (CSV, full precision)", size="sm")
            file = file_box("predictions (CSV)", "predictions-file")
        status = status_box("predictions-status")
    filters = [true_class, predicted_class, correctness, min_loss, search, page, page_size]

    @in_place(2)
    def list_predictions(true_class, predicted_class, correctness, min_loss, search="", page=1, page_size=50):
        page, size = whole(1 if page is None else page, "page", 1), _page_size(page_size)
        frame, total = session.predictions(true_class, predicted_class, correctness,
                                           _min_loss(min_loss), _search(search), page, size)
        pages = max(1, -(-total // size))
        return (with_thumbnails(frame, view, "eval", "eval id"),
                f"{total} matching predictions; page {page} of {pages}", "")

    @in_place(1)
    def download_all(true_class, predicted_class, correctness, min_loss, search="", page=1, page_size=50):
        ids = session.matching(true_class, predicted_class, correctness, _min_loss(min_loss),
                               _search(search))
        return shown_file(session.download(session.prediction_table(ids), "predictions")), \
            f"{len(ids)} predictions in the CSV"

    show.click(list_predictions, filters, [table, count, status], api_name="predictions")
    search.submit(list_predictions, filters, [table, count, status], api_visibility="private")
    download.click(download_all, filters, [file, status], api_name="download_predictions")
    return SimpleNamespace(table=table, filters=filters, count=count, status=status, load=list_predictions)


def _min_loss(value) -> float:
    return 0.0 if value in (None, "") else real(value, "loss at least", 0.0)


def _page_size(value) -> int:
    size = whole(50 if value is None else value, "rows per page", 1)
    if size not in PAGE_SIZES:
        raise ValueError(f"rows per page must be one of {list(PAGE_SIZES)}, got {value!r}")
    return size


def _search(value) -> str:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"search must be text (an eval id, or words), got {value!r}")
    return value or ""
