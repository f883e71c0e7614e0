"""The app in real headless Chromium (Playwright, sync API).

Skipped when gradio, playwright or /usr/bin/chromium is missing. Screenshots of every tab
go to a temporary folder (or $APP_SCREENSHOTS).
"""

from __future__ import annotations

import re

import pytest

pytest.importorskip("gradio", reason="gradio is not installed")
pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

from playwright.sync_api import expect  # noqa: E402

from tests.app.conftest import free_port  # noqa: E402
from tests.app.tiny import BOLD, SCRIPT  # noqa: E402

LOCAL = ("http://127.0.0.1", "data:", "blob:", "about:")
pytestmark = [  # gradio's own queue code against pandas 3
    pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.external = []  # requests that left this machine (there must be none)
    page.dialogs = []   # alert() and friends (an injected script would open one)
    page.on("request", lambda r: None if r.url.startswith(LOCAL) else page.external.append(r.url))
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    page.goto(url)
    return page


def grid_cell(page, table: str, text: str):
    """The first visible cell of a table (`elem_id`) whose text is exactly `text`."""
    return page.locator(f"#{table} [role=gridcell]").filter(has_text=re.compile(f"^\\s*{re.escape(text)}\\s*$")).first


def test_click_a_wrong_prediction_and_see_its_trace(server, browser, screenshots):
    page = open_page(browser, server.url)
    try:
        row = 1  # the second-worst prediction (row 0 is traced on load)
        first_cell = page.locator(f"#predictions-table [data-testid=cell-{row}-0]")
        expect(first_cell).to_be_visible(timeout=30_000)
        eval_id = first_cell.inner_text().strip()
        assert page.locator(f"#predictions-table [data-testid=cell-{row}-3]").inner_text().strip() == "no"
        page.screenshot(path=screenshots / "predictions.png", full_page=True)

        page.locator(f"#predictions-table [data-testid=cell-{row}-1]").click()
        expect(page.get_by_role("tab", name="Trace")).to_have_attribute("aria-selected", "true")
        expect(page.locator("#eval-id input")).to_have_value(eval_id, timeout=20_000)
        expect(page.locator("#harmful-examples img")).to_have_count(8, timeout=20_000)
        expect(page.locator("#helpful-examples img")).to_have_count(8)
        expect(page.locator("#trace-summary textarea")).to_have_value(re.compile("true class"))
        expect(page.locator("#harmful-table [data-testid=cell-0-4]")).to_have_text(re.compile(r"^\s*-\d"))
        page.screenshot(path=screenshots / "trace.png", full_page=True)

        page.get_by_role("tab", name="Suspects").click()
        page.get_by_role("button", name="Rank").click()
        expect(page.locator("#suspects-table [data-testid=cell-0-0]")).to_be_visible(timeout=30_000)
        page.screenshot(path=screenshots / "suspects.png", full_page=True)

        page.get_by_role("tab", name="Groups").click()
        page.get_by_role("button", name="Show harm by group").click()
        expect(page.locator("#groups-table [data-testid=cell-0-0]")).to_have_text(re.compile("batch-"),
                                                                                  timeout=30_000)
        page.get_by_role("button", name="Drill down").click()
        expect(page.locator("#members-table [data-testid=cell-0-0]")).to_be_visible(timeout=30_000)
        expect(page.locator("#members-examples img").first).to_be_visible()
        page.screenshot(path=screenshots / "groups.png", full_page=True)
        assert page.external == [], f"the page fetched from outside this machine: {page.external}"
    finally:
        page.close()
    assert {p.name for p in screenshots.iterdir()} >= {"predictions.png", "trace.png", "suspects.png", "groups.png"}


@pytest.fixture(scope="module")
def html_app(tiny_text):
    """A tiny text app, in this process, whose texts and group values contain HTML."""
    from app.session import Session
    from app.ui import build

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
        cell = page.locator("#predictions-table [data-testid=cell-0-7]")               # the text column
        expect(cell).to_have_text(f"{SCRIPT} great love fun", timeout=30_000)
        page.locator("#predictions-table [data-testid=cell-0-1]").click()
        expect(page.locator("#trace-query textarea")).to_have_value(f"{SCRIPT} great love fun", timeout=20_000)
        expect(page.locator("#harmful-examples")).to_contain_text(SCRIPT, timeout=20_000)
        expect(grid_cell(page, "harmful-table", BOLD)).to_be_visible()
        page.screenshot(path=screenshots / "html-as-text-trace.png", full_page=True)
        page.get_by_role("tab", name="Groups").click()
        page.get_by_role("button", name="Show harm by group").click()
        expect(page.locator("#groups-table [data-testid=cell-0-0]")).to_be_visible(timeout=30_000)
        expect(grid_cell(page, "groups-table", SCRIPT)).to_be_visible()
        page.get_by_role("button", name="Drill down").click()
        expect(page.locator("#members-table [data-testid=cell-0-0]")).to_be_visible(timeout=30_000)
        page.get_by_role("tab", name="Suspects").click()
        page.get_by_role("button", name="Rank").click()
        expect(page.locator("#suspects-table [data-testid=cell-0-0]")).to_be_visible(timeout=30_000)
        page.screenshot(path=screenshots / "html-as-text-suspects.png", full_page=True)

        rendered = page.evaluate("""() => ({
            bold: [...document.querySelectorAll('gradio-app b, gradio-app strong')]
                      .filter(e => e.textContent.trim() === 'x').length,
            scripts: [...document.scripts].filter(s => s.text.includes('alert(1)')).length})""")
        assert rendered == {"bold": 0, "scripts": 0}
        assert page.dialogs == [], f"a script from the data ran: {page.dialogs}"
        assert page.external == []
    finally:
        page.close()
