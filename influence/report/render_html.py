"""report.html: one self-contained page (inline CSS, charts as base64 PNG, no scripts).

Every value that comes from the data or the models goes through `html.escape`. The tables
are the Markdown report's (`render_md`), so both read the same.
"""

from __future__ import annotations

import base64
import html

from influence.report.render_md import (
    EXAMPLE_HEADER,
    GROUP_HEADER,
    REGRESSION_HEADER,
    SIGN_NOTE,
    VERIFICATION_HEADER,
    example_rows,
    fmt,
    group_rows,
    regression_rows,
    regressions_sentence,
    summary_rows,
    verification_lines,
    verification_rows,
)

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .6em 0; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } .headline { font-size: 1.15em; background: #fff4e5; padding: .6em 1em; }
.note { color: #555; font-size: 12px; } img { max-width: 100%; } code { background: #f2f2f2; padding: 0 3px; }
"""


def esc(value) -> str:
    return html.escape(fmt(value))


def table(header: list[str], rows: list[list], cls: str = "", text_column: int | None = None) -> str:
    """An HTML table; every cell escaped (`text_column` also shows its `code` spans)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    cell = lambda k, v: finding_html(fmt(v)) if k == text_column else esc(v)
    body = "".join("<tr>" + "".join(f"<td>{cell(k, v)}</td>" for k, v in enumerate(row)) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def finding_html(text: str) -> str:
    """Escape a finding's text, then show its `column` spans as <code>."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _verification(doc: dict) -> list[str]:
    parts = ['<section id="verification"><h2>Validate before promotion</h2>']
    if not doc["verification"]:
        return parts + ["<p>No candidate to verify (no harmful group).</p></section>"]
    parts.append(table(VERIFICATION_HEADER, verification_rows(doc), "verification"))
    parts.append("<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in verification_lines(doc)) + "</ul>")
    return parts + ["</section>"]


def _explanations(doc: dict) -> list[str]:
    parts = ['<section id="explanations"><h2>Explanations</h2>']
    explained = [g for g in doc["groups"] if g["findings"]]
    for g in explained:
        items = "".join(f"<li>{finding_html(f['text'])}</li>" for f in g["findings"])
        rows = ", ".join(f"#{e['train_index']} ({fmt(e['harm'])})" for e in g["examples"])
        parts.append(f"<h3>{esc(g['column'])} = {esc(g['value'])}</h3><ul>{items}</ul>"
                     f"<p>Its most harmful rows (train index, harm): {html.escape(rows)}</p>")
    if not explained:
        parts.append("<p>No harmful group has a column that stands out.</p>")
    return parts + ["</section>"]


def render_html(doc: dict, figures=()) -> str:
    """The whole report.html from the report's JSON document and its figures."""
    s = doc["summary"]
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', "<title>Regression report</title>",
        f"<style>{STYLE}</style></head><body>", "<h1>Regression report</h1>",
        f'<section id="summary"><p class="headline">{finding_html(s["headline"])}</p>',
        table(["", "old model", "new model"], summary_rows(doc)),
        f"<p>{html.escape(regressions_sentence(s))}</p>",
        f'<p class="note">{html.escape(SIGN_NOTE)}</p></section>',
        *_verification(doc),
        '<section id="groups"><h2>Most harmful groups</h2>',
        table(GROUP_HEADER, group_rows(doc), "groups", text_column=len(GROUP_HEADER) - 1),
    ]
    parts += [f'<figure><img alt="{html.escape(f.title)}" src="data:image/png;base64,'
              f'{base64.b64encode(f.png).decode("ascii")}"><figcaption>{html.escape(f.title)}</figcaption></figure>'
              for f in figures]
    parts += ["</section>", *_explanations(doc),
              '<section id="harmful-examples"><h2>Most harmful training examples</h2>',
              table(EXAMPLE_HEADER, example_rows(doc, doc["harmful_examples"])), "</section>",
              '<section id="suspects"><h2>Suspects</h2><p>Training examples among the most harmful for the most '
              "regressions.</p>", table(EXAMPLE_HEADER, example_rows(doc, doc["suspects"])), "</section>",
              f'<section id="regressions"><h2>Regressions (first {min(15, len(doc["regressions"]))} of '
              f'{len(doc["regressions"])})</h2>', table(REGRESSION_HEADER, regression_rows(doc)), "</section>",
              '<section id="diagnostics"><h2>Diagnostics</h2>',
              table(["", "value"], [[k, v] for k, v in doc["diagnostics"].items() if k != "warnings"]
                    + [["warning", w] for w in doc["diagnostics"]["warnings"]]),
              "</section></body></html>"]
    return "\n".join(parts)
