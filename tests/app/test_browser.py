"""The app in real headless Chromium (Playwright, sync API, Debian's /usr/bin/chromium).

The whole loop on the demo: `influence demo` writes a report folder and prints the app line →
`influence app --report DIR` → a regression row → its trace → two harmful training examples
flagged with a corrected label → the flags exported as CSV (downloaded by the browser) →
`influence report --flags ... --retrain ... --verify` measures the fix. Each step's time is
printed; screenshots of every step go to a temporary folder (or $APP_SCREENSHOTS).

Skipped when gradio, playwright or /usr/bin/chromium is missing.
"""

from __future__ import annotations

import csv
import json
import re
import shlex
import time

import pytest

pytest.importorskip("gradio", reason="gradio is not installed")
pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

from playwright.sync_api import expect

from tests.app.conftest import Server, free_port, run_cli
from tests.app.tiny import BOLD, SCRIPT

LOCAL = ("http://127.0.0.1", "data:", "blob:", "about:")
pytestmark = [  # gradio's own queue code against pandas 3
    pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]


def open_page(browser, url: str, **options):
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, **options)
    page.external = []  # requests that left this machine (there must be none)
    page.dialogs = []   # alert() and friends (an injected script would open one)
    page.on("request", lambda r: None if r.url.startswith(LOCAL) else page.external.append(r.url))
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    page.goto(url)
    return page


def grid_cell(page, table: str, text: str):
    """The first visible cell of a table (`elem_id`) whose text is exactly `text`."""
    return page.locator(f"#{table} [role=gridcell]").filter(has_text=re.compile(f"^\\s*{re.escape(text)}\\s*$")).first


def cell(page, table: str, row: int, column: int):
    return page.locator(f"#{table} [data-testid=cell-{row}-{column}]")


def choose(page, elem_id: str, option: str) -> None:
    """Pick `option` in a gradio dropdown."""
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def flag_from_trace(page, row: int, corrected: str, classes: list[str]) -> tuple[int, str]:
    """Click a harmful training example of the trace, flag it mislabeled with a corrected label."""
    page.get_by_role("tab", name="Trace").click()
    train_id = int(cell(page, "harmful-table", row, 1).inner_text())
    label = cell(page, "harmful-table", row, 2).inner_text().strip()
    cell(page, "harmful-table", row, 2).click()
    expect(page.get_by_role("tab", name="Review")).to_have_attribute("aria-selected", "true", timeout=20_000)
    expect(page.locator("#review-id textarea, #review-id input").first).to_have_value(str(train_id), timeout=20_000)
    expect(page.locator("#review-verdict input:checked")).to_have_count(0)  # nothing preselected
    corrected = corrected if corrected != label else next(c for c in classes if c != label)
    page.locator("#review-verdict").get_by_label("mislabeled").check()
    choose(page, "review-corrected", corrected)
    page.locator("#review-note textarea").fill(f"looks like a {corrected}")
    page.get_by_role("button", name="Save verdict").click()
    expect(page.locator("#review-status textarea")).to_have_value(
        re.compile(f"saved: training example {train_id} → mislabeled, corrected label {corrected}"), timeout=20_000)
    return train_id, corrected


def test_report_to_app_to_flags_to_verify(loop_report, browser, screenshots, tmp_path):
    folder, demo_seconds = loop_report
    times = {"influence demo": demo_seconds}
    started = time.perf_counter()
    app = Server(["--report", str(folder)], tmp_path)
    app.start()
    times["app start (influence app --report DIR)"] = time.perf_counter() - started
    doc = json.loads((folder / "report.json").read_text())
    bundle = json.loads((folder / "bundle.json").read_text())
    classes, top = doc["settings"]["class_names"], doc["groups"][0]
    page = open_page(browser, app.url, accept_downloads=True)
    try:
        started = time.perf_counter()
        page.get_by_role("tab", name="Regression").click()
        expect(page.locator("#report-summary textarea")).to_have_value(
            re.compile(f"Most harmful: {top['column']} {top['value']}"), timeout=30_000)
        expect(page.locator("#report-verification")).to_contain_text(f"{top['column']} = {top['value']}")
        page.screenshot(path=screenshots / "loop-1-regression.png", full_page=True)
        eval_id = cell(page, "report-regressions", 0, 0).inner_text().strip()
        assert int(eval_id) == doc["regressions"][0]["eval_index"]
        cell(page, "report-regressions", 0, 1).click()
        expect(page.get_by_role("tab", name="Trace")).to_have_attribute("aria-selected", "true", timeout=20_000)
        expect(page.locator("#eval-id input")).to_have_value(eval_id, timeout=20_000)
        expect(cell(page, "harmful-table", 0, 5)).to_have_text(re.compile(r"^\s*harmful: removing it lowers"),
                                                               timeout=20_000)
        if bundle["display"].get("modality") == "image":
            expect(page.locator("#harmful-examples img")).to_have_count(8)
        times["report row → trace"] = time.perf_counter() - started
        page.screenshot(path=screenshots / "loop-2-trace.png", full_page=True)

        started = time.perf_counter()
        flagged = [flag_from_trace(page, row, classes[row], classes) for row in (0, 1)]
        expect(page.locator("#flags-table [data-testid=cell-1-0]")).to_be_visible()
        times["flag two examples (corrected labels, notes)"] = time.perf_counter() - started
        page.screenshot(path=screenshots / "loop-3-review.png", full_page=True)

        started = time.perf_counter()
        members = bulk_flag_top_group(page, folder, top, [i for i, _ in flagged])
        times["bulk-flag the top group, keeping the two"] = time.perf_counter() - started
        page.screenshot(path=screenshots / "loop-4-group.png", full_page=True)

        started = time.perf_counter()
        page.get_by_role("tab", name="Review").click()
        page.get_by_role("button", name="Export flags (CSV)").click()
        n_flags = len(set(members) | {i for i, _ in flagged})
        expect(page.locator("#review-status textarea")).to_have_value(
            re.compile(f"exported {n_flags} flags as flags.csv"), timeout=20_000)
        command = page.locator("#review-status textarea").input_value().splitlines()[-1]
        with page.expect_download() as download:
            page.locator("#flags-file a").first.click()
        exported = tmp_path / "flags.csv"
        download.value.save_as(exported)
        times["export"] = time.perf_counter() - started
        page.screenshot(path=screenshots / "loop-5-export.png", full_page=True)
        assert page.external == [] and page.dialogs == []
    finally:
        page.close()
        app.stop()
    rows = list(csv.DictReader(exported.open()))
    reviewed = {i: ("mislabeled", c, f"looks like a {c}") for i, c in flagged}
    reviewed.update({i: ("remove", "", "") for i in members if i not in reviewed})
    got = {int(r["train_id"]): (r["verdict"], r["corrected_label"], r["note"]) for r in rows}
    assert got == reviewed
    assert all(r["source"] for r in rows)
    assert command.startswith("influence report ") and f"--flags {folder / 'flags.csv'}" in command

    started = time.perf_counter()
    out = tmp_path / "verified"
    args = shlex.split(command)[1:]
    args[args.index("--out") + 1] = str(out)
    proc = run_cli(*args)
    step = "the printed influence report --flags --verify --min-recovered 0.8"
    times[step] = time.perf_counter() - started
    fix = next(v for v in json.loads((out / "report.json").read_text())["verification"] if v["kind"] == "flags")
    assert (fix["removed"], fix["relabelled"]) == (len(reviewed) - len(flagged), len(flagged))
    expected = 0 if fix["recovered"] >= 0.8 - 1e-9 else 1
    assert proc.returncode == expected, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert ("PASS: min-recovered" if proc.returncode == 0 else "FAIL: min-recovered") in proc.stdout
    verified = json.loads((out / "flags.json").read_text())["flags"]  # they followed into --out
    assert {f["train_id"]: (f["verdict"], f["corrected_label"], f["note"]) for f in verified} == \
        reviewed
    print(f"flags recovered {fix['recovered']:.1%} (measured); exit {proc.returncode}")
    print("\n".join(f"{step}: {seconds:.1f} s" for step, seconds in times.items()))


def bulk_flag_top_group(page, folder, top: dict, hand_made: list[int]) -> list[int]:
    """Flag the report's top group "remove" from the Groups tab, keeping the hand-made verdicts."""
    import datasets

    page.get_by_role("tab", name="Groups").click()
    page.get_by_role("button", name="Show harm by group").click()
    most = re.compile(f"most harmful: {top['column']} {top['value']}")
    expect(page.locator("#groups-status textarea")).to_have_value(most, timeout=60_000)
    choose(page, "group-verdict", "remove")
    page.get_by_role("button", name="Flag the whole group").click()
    train = datasets.Dataset.from_parquet(str(folder / "data" / "train.parquet"))
    members = [i for i, v in enumerate(train[top["column"]]) if str(v) == str(top["value"])]
    kept = len(set(hand_made) & set(members))
    expect(page.locator("#groups-status textarea")).to_have_value(
        re.compile(f"flagged {len(members) - kept} training examples of {top['column']} "
                   f"{top['value']} as remove"
                   + (f"; kept {kept} hand-made" if kept else "")), timeout=30_000)
    return members


@pytest.fixture(scope="module")
def html_app(tiny_text):
    """A tiny text app, in this process, whose texts and group values contain HTML."""
    from influence_app.session import Session
    from influence_app.ui import build

    page = build(Session(tiny_text), k=3)
    page.queue()
    port = free_port()
    page.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, share=False)
    yield f"http://127.0.0.1:{port}/"
    page.close()


def test_html_in_data_is_shown_as_text(html_app, browser, screenshots):
    page = open_page(browser, html_app)
    try:
        expect(page.get_by_text(f"{BOLD} tiny reviews")).to_be_visible(timeout=30_000)   # the title, literally
        expect(page.get_by_text(f"notes with {SCRIPT}")).to_be_visible()
        expect(grid_cell(page, "predictions-table", f"{SCRIPT} great love fun")).to_be_visible(timeout=30_000)
        cell(page, "predictions-table", 0, 1).click()
        expect(page.locator("#trace-query textarea")).to_have_value(f"{SCRIPT} great love fun", timeout=20_000)
        expect(page.locator("#harmful-examples")).to_contain_text(SCRIPT, timeout=20_000)
        expect(grid_cell(page, "harmful-table", BOLD)).to_be_visible()
        page.screenshot(path=screenshots / "html-as-text-trace.png", full_page=True)
        page.get_by_role("tab", name="Groups").click()
        page.get_by_role("button", name="Show harm by group").click()
        expect(grid_cell(page, "groups-table", SCRIPT)).to_be_visible(timeout=30_000)
        page.get_by_role("button", name="Show its members").click()
        expect(cell(page, "members-table", 0, 0)).to_be_visible(timeout=30_000)
        page.get_by_role("tab", name="Review").click()
        page.get_by_role("button", name="Rank").click()
        expect(cell(page, "suspects-table", 0, 0)).to_be_visible(timeout=30_000)
        page.screenshot(path=screenshots / "html-as-text-review.png", full_page=True)

        rendered = page.evaluate("""() => ({
            bold: [...document.querySelectorAll('gradio-app b, gradio-app strong')]
                      .filter(e => e.textContent.trim() === 'x').length,
            scripts: [...document.scripts].filter(s => s.text.includes('alert(1)')).length})""")
        assert rendered == {"bold": 0, "scripts": 0}
        assert page.dialogs == [], f"a script from the data ran: {page.dialogs}"
        assert page.external == []
    finally:
        page.close()


def test_an_empty_upload_keeps_the_trace_and_says_why(server, browser, screenshots):
    page = open_page(browser, server.url)
    try:
        page.get_by_role("tab", name="Trace").click()
        expect(page.locator("#harmful-examples img")).to_have_count(8, timeout=30_000)
        summary = page.locator("#trace-summary textarea").input_value()
        page.get_by_text("Explain this input").click()
        page.get_by_role("button", name="Predict and trace").click()
        expect(page.locator("#trace-status textarea")).to_have_value("⚠ no image was given", timeout=20_000)
        expect(page.locator("#harmful-examples img")).to_have_count(8)              # the trace is kept
        assert page.locator("#trace-summary textarea").input_value() == summary
        assert page.locator(".error, [data-testid=error]").count() == 0             # no red error badges
        page.screenshot(path=screenshots / "empty-upload.png", full_page=True)
        page.get_by_role("tab", name="Predictions").click()
        page.screenshot(path=screenshots / "predictions-thumbnails.png", full_page=True)
        expect(page.locator("#predictions-table img:visible").first).to_be_visible()  # thumbnails in the table
    finally:
        page.close()
