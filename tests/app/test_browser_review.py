"""The review loop's defects (issue 22, "Why"), each shown in headless Chromium on the small
digits app: Save flags only the example on screen (1), bulk flags keep hand-made verdicts and
can be undone (2), a note stays with its row (3), and slips are answered in place, never with
Gradio's red error badges or a temporary path (4). Screenshots go to $APP_SCREENSHOTS."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("gradio", reason="gradio is not installed")
pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

from playwright.sync_api import expect

from tests.app.test_browser import cell, choose, open_page

pytestmark = [pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]
TIMEOUT = 20_000


def status(page, tab: str):
    return page.locator(f"#{tab}-status textarea")


def no_gradio_errors(page) -> None:
    """No red "Error" badge or toast, no temporary path anywhere on the page."""
    assert page.locator(".error, [data-testid=error], .toast-body.error").count() == 0
    assert page.get_by_text(re.compile(r"^\s*Error\s*$")).count() == 0
    assert "/tmp/" not in page.locator("body").inner_text()


def review_id(page):
    return page.locator("#review-id textarea, #review-id input").first


def open_harmful(page, row: int) -> int:
    """Click a harmful training example of the shown trace; returns its id (now on screen)."""
    page.get_by_role("tab", name="Trace").click()
    expect(cell(page, "harmful-table", row, 1)).to_be_visible(timeout=30_000)
    train_id = int(cell(page, "harmful-table", row, 1).inner_text())
    cell(page, "harmful-table", row, 2).click()
    expect(review_id(page)).to_have_value(str(train_id), timeout=TIMEOUT)
    return train_id


def save(page, verdict: str, corrected: str | None = None, note: str | None = None) -> None:
    page.locator("#review-verdict").get_by_label(verdict).check()
    if corrected:
        choose(page, "review-corrected", corrected)
    if note is not None:
        page.locator("#review-note textarea").fill(note)
    page.get_by_role("button", name="Save verdict").click()


def undo_all(page) -> None:
    page.get_by_role("tab", name="Review").click()
    for _ in range(10):
        page.get_by_role("button", name="Undo the last verdict or bulk flag").click()
        expect(status(page, "review")).to_have_value(re.compile("undone|nothing to undo"),
                                                     timeout=TIMEOUT)
        if "nothing to undo" in status(page, "review").input_value():
            return
        status(page, "review").evaluate("e => { e.value = '' }")


@pytest.fixture
def page(server, browser):
    page = open_page(browser, server.url)
    yield page
    page.close()


def test_save_flags_only_the_example_on_screen(page, screenshots):
    shown = open_harmful(page, 0)
    typed = 5 if shown != 5 else 6
    review_id(page).fill(str(typed))                    # typed, not opened (no Enter)
    save(page, "keep")
    expect(status(page, "review")).to_have_value(
        re.compile(f"⚠ training example {typed} is typed but {shown} is shown"), timeout=TIMEOUT)
    page.screenshot(path=screenshots / "why1-typed-not-shown.png", full_page=True)
    assert page.locator("#flags-table").get_by_text(str(typed), exact=True).count() == 0
    review_id(page).press("Enter")                      # now it is opened and shown
    about = page.locator("#review-about textarea")
    expect(about).to_have_value(re.compile(f"^training example {typed}:"), timeout=TIMEOUT)
    save(page, "keep")
    expect(status(page, "review")).to_have_value(f"saved: training example {typed} → keep",
                                                 timeout=TIMEOUT)
    expect(about).to_have_value(re.compile("flagged: keep"))  # the line under it is not stale
    no_gradio_errors(page)
    undo_all(page)


def test_bulk_flags_keep_hand_made_verdicts_and_undo_reverts(page, screenshots):
    hand = []
    for row in (0, 1):
        i = open_harmful(page, row)
        save(page, "mislabeled", "0", f"hand note {i}")
        expect(status(page, "review")).to_have_value(re.compile(f"saved: training example {i}"),
                                                     timeout=TIMEOUT)
        hand.append(i)
    page.get_by_role("tab", name="Trace").click()
    choose(page, "bulk-verdict", "remove")
    page.get_by_role("button", name="Flag the k most harmful").click()
    expect(status(page, "trace")).to_have_value(
        re.compile(r"flagged 6 training examples .*kept 2 hand-made"), timeout=TIMEOUT)
    page.get_by_role("tab", name="Review").click()
    for i in hand:
        row = page.locator("#flags-table [role=row]").filter(has_text=f"hand note {i}")
        expect(row).to_contain_text("mislabeled")
    page.screenshot(path=screenshots / "why2-bulk-kept.png", full_page=True)
    page.get_by_role("button", name="Undo the last verdict or bulk flag").click()
    expect(status(page, "review")).to_have_value(
        re.compile("undone: remove on 6 training examples"), timeout=TIMEOUT)
    expect(page.locator("#flags-table [role=row]").filter(has_text="remove")).to_have_count(0)
    no_gradio_errors(page)
    undo_all(page)


def test_a_note_stays_with_its_row(page, screenshots):
    first = open_harmful(page, 0)
    save(page, "keep", note="only about this one")
    expect(status(page, "review")).to_have_value(re.compile(f"saved: training example {first}"),
                                                 timeout=TIMEOUT)
    second = open_harmful(page, 1)
    expect(page.locator("#review-note textarea")).to_have_value("", timeout=TIMEOUT)
    assert second != first
    page.screenshot(path=screenshots / "why3-note-cleared.png", full_page=True)
    undo_all(page)


def test_slips_are_answered_in_place(page, screenshots, tmp_path):
    page.get_by_role("tab", name="Trace").click()
    expect(page.locator("#harmful-examples img")).to_have_count(8, timeout=30_000)
    summary = page.locator("#trace-summary textarea").input_value()
    page.locator("#eval-id input").fill("-1")
    page.get_by_role("button", name="Trace", exact=True).click()
    expect(status(page, "trace")).to_have_value(
        re.compile(r"⚠ the eval example must be an integer in \[0, "), timeout=TIMEOUT)
    assert page.locator("#trace-summary textarea").input_value() == summary   # the trace is kept
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    page.get_by_text("Explain this input").click()
    page.locator("#explain-image input[type=file]").set_input_files(str(empty))
    page.get_by_role("button", name="Predict and trace").click()
    expect(status(page, "trace")).to_have_value(re.compile("⚠ the upload is empty"),
                                                timeout=TIMEOUT)
    no_gradio_errors(page)
    page.screenshot(path=screenshots / "why4-trace-slips.png", full_page=True)
    page.get_by_role("tab", name="Predictions").click()
    for box, value, message in (("page", "0", "page must be a whole number ≥ 1, got 0"),
                                ("min-loss", "-5", "loss at least must be a number ≥ 0, got -5")):
        page.locator(f"#{box} input").fill(value)
        page.get_by_role("button", name="Show", exact=True).click()
        expect(status(page, "predictions")).to_have_value(f"⚠ {message}", timeout=TIMEOUT)
        page.locator(f"#{box} input").fill("1" if box == "page" else "0")
    no_gradio_errors(page)
    page.screenshot(path=screenshots / "why4-predictions-slips.png", full_page=True)
