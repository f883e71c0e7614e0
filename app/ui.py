"""The Gradio page: tabs, components and the routes between them and a `Session`.

Tabs: Predictions (filter the eval set, worst first; click a row to trace it), Trace (top-k
helpful and harmful training examples, and "explain this input"), Suspects (self-influence
and harm on bad predictions; reviewer verdicts saved beside the index), Groups (harm by a
metadata column, drill-down), and Regression when opened on a report folder.

Every handler is also an API endpoint (`api_name`), so `gradio_client` can drive the app.
"""

from __future__ import annotations

import functools
import html
import re

import gradio as gr

from app.session import Session, Trace
from app.views import View, trace_summary, view_for

SIGN_NOTE = ("score > 0: helpful (removing that training example would raise this loss); "
             "score < 0: harmful (removing it would lower this loss). Harm = −Σ score over the bad predictions.")


def plain(text) -> str:
    """`text` for a Markdown component, shown literally: HTML and Markdown characters escaped."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|~>])", r"\\\1", html.escape(str(text), quote=True))


def _errors_to_ui(fn):
    """Turn our errors (bad ids, unknown classes...) into a message in the page / the client."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from influence.errors import InfluenceError

        try:
            return fn(*args, **kwargs)
        except (InfluenceError, ValueError) as error:
            raise gr.Error(str(error)) from error

    return wrapper


def _first_cell(evt) -> int:
    """The id in the first column of a clicked table row."""
    if not evt.row_value:
        raise ValueError("click a row of the table")
    return int(float(evt.row_value[0]))


def header(session: Session) -> str:
    s = session.summary()
    damping = f"{s['damping']:.3g}" if isinstance(s["damping"], (int, float)) else "n/a"
    lines = [f"### {plain(s['name'])}",
             plain(f"{s['n_train']} training examples · {s['n_eval']} eval examples, {s['wrong']} predicted wrong · "
                   f"method {s['method']} · curvature backend {s['curvature_backend']} · damping {damping}")]
    if s["notes"]:
        lines.append(plain(s["notes"]))
    return "\n\n".join(lines)


def build(session: Session, k: int = 8):
    """The `gr.Blocks` app for `session` (not launched)."""
    view: View = view_for(session)
    classes = ["all"] + list(session.setup.class_names)
    group_columns = list(session.setup.group_columns)

    def show_trace(trace: Trace) -> tuple:
        return (view.show(trace.query), trace_summary(trace), trace.probabilities,
                view.show_examples(trace.harmful, "harmful"), trace.harmful,
                view.show_examples(trace.helpful, "helpful"), trace.helpful)

    with gr.Blocks(title=f"influence · {session.setup.name}", analytics_enabled=False) as page:
        gr.Markdown(header(session))
        with gr.Tabs() as tabs:
            # ---------------------------------------------------------- Predictions
            with gr.Tab("Predictions", id="predictions"):
                with gr.Row():
                    true_class = gr.Dropdown(classes, value="all", label="true class")
                    predicted_class = gr.Dropdown(classes, value="all", label="predicted class")
                    correctness = gr.Radio(["wrong", "right", "all"], value="wrong", label="predictions")
                    min_loss = gr.Number(0.0, label="loss at least", minimum=0)
                    filter_button = gr.Button("Filter", variant="primary")
                gr.Markdown("Worst (highest loss) first. Click a row to trace it.")
                predictions = gr.Dataframe(label="eval predictions (the first 500)", interactive=False, wrap=True, max_height=560,
                                           elem_id="predictions-table")

            # ---------------------------------------------------------- Trace
            with gr.Tab("Trace", id="trace"):
                with gr.Row():
                    eval_id = gr.Number(int(session.bad[0]) if len(session.bad) else 0, label="eval example",
                                        precision=0, minimum=0, elem_id="eval-id")
                    k_slider = gr.Slider(1, 30, value=k, step=1, label="k (examples per side)")
                    trace_button = gr.Button("Trace", variant="primary")
                if view.wide_query:
                    query = view.query_component("input", elem_id="trace-query")
                with gr.Row():
                    if not view.wide_query:
                        with gr.Column(scale=1):
                            query = view.query_component("input", elem_id="trace-query")
                    with gr.Column(scale=2):
                        summary = gr.Textbox(show_label=False, container=False, interactive=False,
                                             elem_id="trace-summary")
                        probabilities = gr.Label(label="predicted probabilities", num_top_classes=5)
                gr.Markdown(plain(SIGN_NOTE))
                harmful_view = view.examples_component("most harmful training examples", elem_id="harmful-examples")
                harmful_table = gr.Dataframe(label="most harmful: scores", interactive=False, wrap=True,
                                             elem_id="harmful-table")
                helpful_view = view.examples_component("most helpful training examples", elem_id="helpful-examples")
                helpful_table = gr.Dataframe(label="most helpful: scores", interactive=False, wrap=True,
                                             elem_id="helpful-table")
                trace_outputs = [query, summary, probabilities, harmful_view, harmful_table, helpful_view,
                                 helpful_table]
                with gr.Accordion("Explain this input", open=False):
                    new_input = view.input_component()
                    with gr.Row():
                        new_label = gr.Dropdown(["predicted"] + list(session.setup.class_names), value="predicted",
                                                label="attribute the loss of")
                        explain_button = gr.Button("Predict and trace", variant="primary")

            # ---------------------------------------------------------- Suspects
            with gr.Tab("Suspects", id="suspects"):
                gr.Markdown(plain(f"Training examples ranked by self-influence (unusual or mislabeled) or by how "
                                  f"many of the {len(session.bad)} worst wrong predictions they are among the "
                                  f"{session.k_suspects} most harmful for. Verdicts are saved to "
                                  f"{session.flags.path} (the data is never changed)."))
                with gr.Row():
                    sort_by = gr.Radio(["self-influence", "bad predictions harmed", "total harm"],
                                       value="self-influence", label="rank by")
                    top_n = gr.Number(50, label="show", precision=0, minimum=1)
                    rank_button = gr.Button("Rank", variant="primary")
                suspects = gr.Dataframe(label="suspects (click a row to review it)", interactive=False, wrap=True,
                                        max_height=420, elem_id="suspects-table")
                with gr.Row():
                    with gr.Column(scale=1):
                        suspect_view = view.query_component("training example")
                    with gr.Column(scale=2):
                        train_id = gr.Number(label="training example", precision=0, minimum=0)
                        verdict = gr.Radio(["mislabeled", "keep", "clear"], value="mislabeled", label="verdict")
                        note = gr.Textbox(label="note", max_lines=2)
                        flag_button = gr.Button("Save verdict", variant="primary")
                flag_status = gr.Textbox(show_label=False, container=False, interactive=False)
                flags = gr.Dataframe(label="verdicts", interactive=False, wrap=True, elem_id="flags-table")

            # ---------------------------------------------------------- Groups
            with gr.Tab("Groups", id="groups"):
                gr.Markdown(plain(f"Harm of each group on the {len(session.bad)} worst wrong predictions "
                                  "(Attributor.group_scores); harm > 0 pushed their loss up."))
                with gr.Row():
                    column = gr.Dropdown(group_columns, value=group_columns[0] if group_columns else None,
                                         label="group column")
                    groups_button = gr.Button("Show harm by group", variant="primary")
                harm_plot = gr.BarPlot(x="group", y="harm", sort="-y", label="harm by group", height=320)
                harm_table = gr.Dataframe(label="harm by group", interactive=False, max_height=300,
                                          elem_id="groups-table")
                with gr.Row():
                    group_value = gr.Dropdown([], label="group", allow_custom_value=True)
                    members_button = gr.Button("Drill down")
                members_view = view.examples_component("most harmful members", rows=2, elem_id="members-examples")
                members = gr.Dataframe(label="members, most harmful first", interactive=False, wrap=True,
                                       max_height=420, elem_id="members-table")

            regressions = report_tab(session)

        # -------------------------------------------------------------- routes
        @_errors_to_ui
        def list_predictions(true_class, predicted_class, correctness, min_loss):
            return session.predictions(true_class, predicted_class, correctness, min_loss or 0.0)

        @_errors_to_ui
        def trace(eval_id, k):
            return show_trace(session.trace(eval_id, int(k)))

        @_errors_to_ui
        def trace_row(k, evt: gr.SelectData):
            j = _first_cell(evt)
            return (j, gr.Tabs(selected="trace"), *show_trace(session.trace(j, int(k))))

        @_errors_to_ui
        def explain(value, label, k):
            return show_trace(session.explain(view.parse(value), label, int(k)))

        @_errors_to_ui
        def rank(sort_by, top_n, progress=gr.Progress()):
            return session.suspects(sort_by, int(top_n or 50), lambda f, what: progress(f, desc=what))

        @_errors_to_ui
        def review_row(evt: gr.SelectData):
            i = _first_cell(evt)
            return i, view.show(session.example("train", i))

        @_errors_to_ui
        def flag(train_id, verdict, note):
            table = session.flag(train_id, verdict, note)
            return table, f"saved: training example {int(train_id)} → {verdict} ({session.flags.path})"

        @_errors_to_ui
        def harm_by_group(column, progress=gr.Progress()):
            table = session.group_harm(column, lambda f, what: progress(f, desc=what))
            values = table["group"].tolist()
            return table.head(30), table, gr.Dropdown(choices=values, value=values[0] if values else None)

        @_errors_to_ui
        def drill_down(column, value, progress=gr.Progress()):
            session.suspect_scores(lambda f, what: progress(f, desc=what))
            table = session.group_members(column, value)
            return view.show_examples(table.head(16), "harmful"), table

        filters = [true_class, predicted_class, correctness, min_loss]
        filter_button.click(list_predictions, filters, predictions, api_name="predictions")
        page.load(list_predictions, filters, predictions, api_visibility="private")
        predictions.select(trace_row, [k_slider], [eval_id, tabs, *trace_outputs], api_visibility="private")
        trace_button.click(trace, [eval_id, k_slider], trace_outputs, api_name="trace")
        page.load(trace, [eval_id, k_slider], trace_outputs, api_visibility="private")
        explain_button.click(explain, [new_input, new_label, k_slider], trace_outputs, api_name="explain")
        rank_button.click(rank, [sort_by, top_n], suspects, api_name="suspects")
        suspects.select(review_row, None, [train_id, suspect_view], api_visibility="private")
        flag_button.click(flag, [train_id, verdict, note], [flags, flag_status], api_name="flag")
        page.load(session.flag_table, None, flags, api_name="flags")
        groups_button.click(harm_by_group, [column], [harm_plot, harm_table, group_value], api_name="groups")
        members_button.click(drill_down, [column, group_value], [members_view, members], api_name="group_members")
        if regressions is not None:
            regressions.select(trace_row, [k_slider], [eval_id, tabs, *trace_outputs], api_visibility="private")
    return page


def report_tab(session: Session):
    """The Regression tab, only when the app was opened on a report folder; returns its
    regressions table (click a row to trace it) or None."""
    folder = session.setup.report_folder
    if folder is None:
        return None
    from app import report

    doc = report.load_report(folder)
    with gr.Tab("Regression", id="regression"):
        gr.Textbox(report.summary_text(doc), label=f"regression report ({folder})", interactive=False, lines=2)
        gr.Dataframe(report.groups_table(doc), label="groups, most harmful first (harm > 0 caused the regressions)",
                     interactive=False, wrap=True, max_height=360, elem_id="report-groups")
        regressions = gr.Dataframe(report.regressions_table(doc), interactive=False, wrap=True, max_height=360,
                                   label="regressions (click a row to trace it with the opened model)",
                                   elem_id="report-regressions")
        gr.Dataframe(report.suspects_table(doc), label="suspects: harmful to the most regressions",
                     interactive=False, wrap=True, max_height=360, elem_id="report-suspects")
    return regressions
