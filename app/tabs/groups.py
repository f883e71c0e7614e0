"""The Groups tab: harm of each value of a metadata column (`influence.harm.group_harm`, the
definition the report uses: opened on a report, both rank the same group first), its members,
and flagging a whole group."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from influence_app import inputs
from influence_app.inputs import boolean
from influence_app.session import Session
from influence_app.tabs.common import (
    VERDICT_CHOICES,
    bulk_status,
    empty_table,
    in_place,
    md_text,
    readable,
    status_box,
    thumbnail_datatypes,
    with_thumbnails,
)


GROUP_COLUMNS = ["group", "harm", "estimator", "share", "count", "first-order harm"]


def groups_tab(session: Session, view) -> SimpleNamespace:
    """Build the tab and its own events; returns the components other tabs route to."""
    columns, queries = list(session.setup.group_columns), list(session.queries)
    with gr.Tab("Groups", id="groups"):
        gr.Markdown(md_text("Harm of each group = the estimated drop of the chosen predictions' summed loss if the "
                            "group were removed from the training data (group removal: one Newton step, when the "
                            "model is small enough; else the sum of its members' harm). > 0: it caused them."))
        with gr.Row():
            column = inputs.dropdown(columns, value=columns[0] if columns else None,
                                     label="group column")
            on = inputs.dropdown(queries, value=queries[0], label="predictions")
            show = gr.Button("Show harm by group", variant="primary")
        plot = gr.BarPlot(x="group", y="harm", sort="-y", label="harm by group (axis from zero)", height=320,
                          elem_id="groups-plot")
        table = gr.Dataframe(empty_table(GROUP_COLUMNS), label="harm by group", interactive=False,
                             max_height=300, elem_id="groups-table")
        with gr.Row():
            value = gr.Dropdown([], label="group", allow_custom_value=True, elem_id="group-value")
            drill = gr.Button("Show its members")
        members_view = view.examples_component("most harmful members", rows=2, elem_id="members-examples")
        members = gr.Dataframe(label="members, most harmful first (click a row to review it)", interactive=False,
                               wrap=True, max_height=420, datatype=thumbnail_datatypes(session.columns_of("suspects"),
                                                                                       view),
                               value=empty_table(session.columns_of("suspects"), view), elem_id="members-table")
        with gr.Row():
            verdict = inputs.dropdown(VERDICT_CHOICES, value=None, label="verdict for every member",
                                  elem_id="group-verdict")
            corrected = inputs.dropdown([""] + list(session.setup.class_names), value=None,
                                        label="corrected label")
            replace = gr.Checkbox(False, label="replace hand-made verdicts",
                                  elem_id="group-replace")
            flag = gr.Button("Flag the whole group", size="sm", elem_id="group-flag")
        status = status_box("groups-status")

    @in_place(3)
    def harm_by_group(column, on, progress=gr.Progress()):
        frame = session.group_harm(column, on, lambda f, what: progress(f, desc=what))
        values = frame["group"].tolist()
        harm = frame["harm"].to_numpy(float)
        low, high = float(harm.min(initial=0.0)), float(harm.max(initial=0.0))
        chart = gr.BarPlot(value=frame.head(30), y_lim=[low, high * 1.05 if high > 0 else 1.0])
        top = f"most harmful: {column} {values[0]} ({frame['estimator'][0]})" if values else "no predictions to use"
        return chart, readable(frame), gr.Dropdown(choices=values, value=values[0] if values else None), top

    @in_place(2)
    def drill_down(column, value, on, progress=gr.Progress()):
        frame = session.group_members(column, value, on)
        return view.show_examples(frame.head(16), "harmful"), with_thumbnails(frame, view), ""

    @in_place(0)
    def flag_group(column, value, verdict, corrected, replace):
        outcome = session.flag(session.members(column, value), verdict, corrected, bulk=True,
                               replace_hand_made=boolean(replace, "replace hand-made verdicts"))
        return bulk_status(outcome, f"of {column} {value}", verdict)

    show.click(harm_by_group, [column, on], [plot, table, value, status], api_name="groups")
    drill.click(drill_down, [column, value, on], [members_view, members, status], api_name="group_members")
    flag.click(flag_group, [column, value, verdict, corrected, replace], [status],
               api_name="flag_group")
    return SimpleNamespace(members=members, status=status, flag=flag)
