"""The Review tab: rank suspicious training examples, review one, flag it, export the flags.

Nothing is preselected: the training example is empty until a row is clicked (here, in a
trace, in a group) or its id typed and Enter pressed, and the verdict and corrected label are
empty until chosen. Save applies to the example on screen only: a typed id that was not opened
is refused, so Save can never flag a row that was not shown. A note belongs to its row (opening
another example shows that one's note). Undo reverts the last save or bulk flag. Flags go to
the verdicts file beside the index or report (`app.flags.FlagStore`); Export writes the CSV /
JSON Lines that `influence report --flags` and `--verify` read.
"""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from influence_app import inputs
from influence_app.inputs import whole
from influence_app.session import Session
from influence_app.tabs.common import (
    VERDICT_CHOICES,
    clicked,
    empty_table,
    file_box,
    in_place,
    md_text,
    shown_file,
    status_box,
    thumbnail_datatypes,
    with_thumbnails,
)

RANKINGS = {"harm on the chosen predictions": "harm", "how many of them it harms": "harmed",
            "self-influence (unusual or mislabeled)": "self-influence"}


def review_tab(session: Session, view) -> SimpleNamespace:
    """Build the tab and its own events; returns the components other tabs route to."""
    queries = list(session.queries)
    with gr.Tab("Review", id="review"):
        gr.Markdown(md_text(f"Training examples ranked by their harm on the chosen predictions, by how many of them "
                            f"they are among the {session.k_suspects} most harmful for, or by self-influence. "
                            "Click a row to review it. Verdicts are saved beside the index; the data is never "
                            "changed."))
        with gr.Row():
            on = inputs.dropdown(queries, value=queries[0], label="predictions")
            sort_by = inputs.dropdown(list(RANKINGS), value=next(iter(RANKINGS)), label="rank by")
            top_n = inputs.Number(50, label="show", precision=0, elem_id="top-n")
            rank_button = gr.Button("Rank", variant="primary")
        suspects = gr.Dataframe(label="training examples (click a row to review it)", interactive=False, wrap=True,
                                max_height=420, datatype=thumbnail_datatypes(session.columns_of("suspects"), view),
                                value=empty_table(session.columns_of("suspects"), view),
                                elem_id="suspects-table")
        panel = _review_panel(session, view)
        flags = gr.Dataframe(label="verdicts", interactive=False, wrap=True, elem_id="flags-table")
        with gr.Row():
            export_csv = gr.Button("Export flags (CSV)", size="sm", elem_id="export-csv")
            export_jsonl = gr.Button("Export flags (JSON Lines)", size="sm", elem_id="export-jsonl")
            undo_button = gr.Button("Undo the last verdict or bulk flag", size="sm",
                                    elem_id="undo-flags")
        exported = file_box("flags export", "flags-file")
        status = status_box("review-status")

    opener = _opener(session, view)
    _wire(session, view, opener, SimpleNamespace(
        rank=rank_button, on=on, sort_by=sort_by, top_n=top_n, suspects=suspects, panel=panel,
        flags=flags, undo=undo_button, export_csv=export_csv, export_jsonl=export_jsonl,
        exported=exported, status=status))
    return SimpleNamespace(suspects=suspects, flags=flags, status=status, panel=panel, open=opener)


def _wire(session: Session, view, opener, c: SimpleNamespace) -> None:
    """The tab's own events: rank, open a typed id, save, undo, export."""

    @in_place(1)
    def rank(on, sort_by, top_n, progress=gr.Progress()):
        ranking = RANKINGS.get(sort_by, sort_by) if isinstance(sort_by, str) else sort_by
        frame = session.suspects(ranking, whole(top_n, "show", 1, 10_000), on,
                                 lambda f, what: progress(f, desc=what))
        return with_thumbnails(frame, view), ""

    @in_place(3)
    def save(shown, typed, verdict, corrected, note):
        i = _shown_row(session, shown, typed)
        outcome = session.flag(i, verdict, corrected, note)
        fix = f", corrected label {corrected}" if corrected else ""
        saved = f"saved: training example {i} → {verdict}{fix}" if outcome.changed else \
            "nothing changed"
        return session.flag_table(), gr.update(value=None), describe(session, i), saved

    @in_place(2)
    def undo(shown):
        done = session.undo_flags()
        about = describe(session, shown) if shown is not None else gr.update()
        return session.flag_table(), about, done

    @in_place(1)
    def export(kind):
        path = session.export_flags(kind)
        count = len(session.flags.all())
        return shown_file(path), (f"exported {count} flags as {path.name}; "
                                  f"{session.verify_line(path)}")

    @in_place(len(OPENED))
    def open_typed(typed):
        return (*opener(typed), "")

    p = c.panel
    opened = [getattr(p, name) for name in OPENED]
    c.rank.click(rank, [c.on, c.sort_by, c.top_n], [c.suspects, c.status], api_name="suspects")
    p.train_id.submit(open_typed, [p.train_id], [*opened, c.status], api_name="open_example")
    p.save.click(save, [p.shown, p.train_id, p.verdict, p.corrected, p.note],
                 [c.flags, p.verdict, p.about, c.status], api_name="flag")
    c.undo.click(undo, [p.shown], [c.flags, p.about, c.status], api_name="undo_flags")
    exported = [c.exported, c.status]
    c.export_csv.click(lambda: export("csv"), None, exported, api_name="export_flags_csv")
    c.export_jsonl.click(lambda: export("jsonl"), None, exported, api_name="export_flags_jsonl")


def _shown_row(session: Session, shown, typed) -> int:
    """The training example on screen, which Save applies to; refused when another id is typed."""
    if shown is None:
        raise ValueError("open a training example first: click a row, or type its id and press "
                         "Enter (nothing was saved)")
    typed = str(typed or "").strip()
    if typed != str(shown):
        raise ValueError(f"training example {typed or '(none)'} is typed but {shown} is shown: "
                         "press Enter to open it, then save (nothing was saved)")
    return session.check_train_id(shown)


def describe(session: Session, i: int) -> str:
    """The line under a reviewed example: its label, groups and current verdict (with its note)."""
    groups = ", ".join(f"{c} {values[i]}" for c, values in session.columns.items())
    flag = session.flags.flag_of(i)
    verdict = ""
    if flag is not None:
        verdict = (f"; flagged: {session.flags.get(i)} (by {flag.get('by', 'review')}, "
                   f"{flag.get('time', '')})")
    return (f"training example {i}: label {session.class_name(session.train_labels[i])}"
            + (f"; {groups}" if groups else "") + verdict)


UNDER_REVIEW = "training example under review"


def _review_panel(session: Session, view) -> SimpleNamespace:
    if view.wide_query:  # a table row: across the page, every column shown (scrolls sideways)
        example = view.query_component(UNDER_REVIEW, elem_id="review-example")
    with gr.Row():
        if not view.wide_query:
            with gr.Column(scale=1):
                example = view.query_component(UNDER_REVIEW, elem_id="review-example")
        with gr.Column(scale=2):
            train_id = gr.Textbox("", label="training example (click a row, or type its id and "
                                  "press Enter)", max_lines=1, elem_id="review-id")
            about = gr.Textbox(show_label=False, container=False, interactive=False, elem_id="review-about")
            verdict = inputs.Radio(VERDICT_CHOICES, value=None, label="verdict",
                                   elem_id="review-verdict")
            corrected = inputs.dropdown([""] + list(session.setup.class_names), value=None,
                                    label="corrected label (for mislabeled)", elem_id="review-corrected")
            note = gr.Textbox(label="note", max_lines=2, elem_id="review-note")
            save = gr.Button("Save verdict", variant="primary", elem_id="save-verdict")
    shown = gr.State(None)  # the training example on screen: the one Save applies to
    return SimpleNamespace(example=example, train_id=train_id, about=about, verdict=verdict, corrected=corrected,
                           note=note, save=save, shown=shown)


def _opener(session: Session, view):
    """`open(i)`: the review panel's values for training example i (`OPENED`): its id, view and
    description, the verdict and corrected label cleared, and its own note (or none)."""

    def open_example(i) -> tuple:
        i = session.check_train_id(i)
        flag = session.flags.flag_of(i) or {}
        return (str(i), view.show(session.example("train", i)), describe(session, i),
                gr.update(value=None), gr.update(value=None), flag.get("note", ""), i)

    return open_example


OPENED = ("train_id", "example", "about", "verdict", "corrected", "note", "shown")


def review_outputs(review: SimpleNamespace) -> list:
    """The components `review.open(i)` fills, in order (`OPENED`)."""
    return [getattr(review.panel, name) for name in OPENED]


def row_opener(review: SimpleNamespace, column: int):
    """An event handler: a click on a table row (train id in `column`) opens that example for review."""

    @in_place(len(review_outputs(review)) + 1)
    def open_row(evt: gr.SelectData):
        return (*review.open(clicked(evt, column)), gr.Tabs(selected="review"), "")

    return open_row
