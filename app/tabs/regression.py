"""The Regression tab (only when the app was opened on a report): the report's answer, its
verified fixes, groups, regressions (click one to trace it) and suspects (click to review)."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from influence_app import report
from influence_app.session import Session
from influence_app.tabs.common import in_place


def regression_tab(session: Session) -> SimpleNamespace | None:
    """Build the tab, or return None when no report is open."""
    doc, folder = session.setup.report, session.setup.report_folder
    if doc is None:
        return None
    with gr.Tab("Regression", id="regression"):
        gr.Textbox(report.summary_text(doc), label=f"regression report ({folder.name if folder else ''})",
                   interactive=False, lines=3, elem_id="report-summary")
        gr.Dataframe(report.verification_table(doc), label="validate before promotion: each candidate fix",
                     interactive=False, wrap=False, elem_id="report-verification")
        gr.Textbox(report.verification_text(doc), show_label=False, interactive=False, lines=2,
                   elem_id="report-verification-text")
        with gr.Row():
            estimate = gr.Button("Estimate the fix of your verdicts", size="sm",
                                 elem_id="estimate-flags")
            mine = gr.Textbox(show_label=False, interactive=False, lines=2,
                              elem_id="flags-verification",
                              placeholder="your verdicts (Review tab), estimated as the report "
                                          "estimates its fixes")
        gr.Dataframe(report.groups_table(doc), label="groups, most harmful first (harm > 0 caused the regressions)",
                     interactive=False, wrap=True, max_height=360, elem_id="report-groups",
                     column_widths=["9%", "9%", "7%", "8%", "6%", "8%", "6%", "47%"])
        regressions = gr.Dataframe(report.regressions_table(doc), interactive=False, wrap=True, max_height=360,
                                   label="regressions (click a row to trace it)", elem_id="report-regressions")
        suspects = gr.Dataframe(report.suspects_table(doc), label="suspects: harmful to the most regressions (click "
                                "a row to review it)", interactive=False, wrap=True, max_height=360,
                                elem_id="report-suspects")

    @in_place(0)
    def estimate_flags():
        return report.flags_fix_text(session)

    estimate.click(estimate_flags, None, [mine], api_name="estimate_flags")
    return SimpleNamespace(regressions=regressions, suspects=suspects)
