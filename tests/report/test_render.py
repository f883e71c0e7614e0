"""report.html / report.md / report.json as written by Report.save (escaping, sections, browser)."""

import json
import os
import shutil
import subprocess

import pytest

import influence as inf
from influence.report import regression_report
from tests.report.scenarios import WEIGHT_DECAY, build

HOSTILE = "<script>alert('pwned')</script>"
SECTIONS = ["summary", "verification", "groups", "explanations", "harmful-examples", "suspects", "regressions",
            "diagnostics"]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A report whose corrupted source and one of its category values are script tags."""
    old, new, train, eval_set, _ = build("labels", "s3", rename={"s3": HOSTILE})
    train = train.map(lambda row, i: {"color": HOSTILE if row["source"] == HOSTILE and i % 2 else row["color"]},
                      with_indices=True)
    report = regression_report(old, new, train, eval_set, ["source", "color"],
                               task=inf.ClassificationTask(weight_decay=WEIGHT_DECAY), permutations=99, bootstrap=20)
    folder = tmp_path_factory.mktemp("report")
    return report, report.save(folder), folder


def test_save_writes_exactly_three_complete_files(hostile):
    report, paths, folder = hostile
    assert sorted(os.listdir(folder)) == ["report.html", "report.json", "report.md"]  # no temporaries left
    doc = json.loads(paths["report.json"].read_text())
    assert doc["schema_version"] == "2.0"
    assert doc["groups"][0]["value"] == HOSTILE  # the raw value survives in JSON
    assert [g["harm"] for g in doc["groups"]] == sorted((g["harm"] for g in doc["groups"]), reverse=True)
    assert paths["report.html"].read_text().rstrip().endswith("</html>")


def test_data_values_are_escaped_in_html_and_markdown(hostile):
    report, paths, _ = hostile
    assert report.groups[0].value == HOSTILE
    assert any(HOSTILE in f.text for f in report.groups[0].findings if f.columns == ["color"])
    for name, escaped in (("report.html", "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;"),
                          ("report.md", "&lt;script&gt;alert('pwned')&lt;/script&gt;")):
        text = paths[name].read_text()
        assert "<script" not in text.lower(), name
        assert escaped in text, name


def test_html_is_self_contained_with_every_section(hostile):
    html = hostile[1]["report.html"].read_text()
    for section in SECTIONS:
        assert f'id="{section}"' in html
    assert html.count('src="data:image/png;base64,iVBORw0KGgo') >= 2  # PNG signature, embedded
    assert "http://" not in html and "https://" not in html


def test_markdown_has_the_ranked_group_table(hostile):
    md = hostile[1]["report.md"].read_text()
    assert "## Most harmful groups" in md and "| rank | column | value |" in md
    first_row = next(line for line in md.splitlines() if line.startswith("| 1 |"))
    assert "source" in first_row and "&lt;script&gt;" in first_row


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs headless Chromium (apt-get install -y chromium)")
def test_html_renders_in_headless_chromium(hostile, tmp_path):
    path = hostile[1]["report.html"]
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path}",
                           "--dump-dom", f"file://{path}"], capture_output=True, text=True, timeout=120)
    dom = proc.stdout
    assert proc.returncode == 0 and "</html>" in dom, proc.stderr[-2000:]
    for section in SECTIONS:
        assert f'id="{section}"' in dom
    assert "<script" not in dom.lower()  # the hostile value stayed text: no script element was created
    assert "&lt;script&gt;" in dom
    assert "Most harmful groups" in dom and dom.count("<img") >= 2


def test_the_harm_chart_axis_label_fits_the_picture(monkeypatch):
    """Why 7: report.html's chart axis label was cut at "(> 0 = caused th"."""
    from influence.report import figures

    drawn = []
    original = figures._png
    monkeypatch.setattr(figures, "_png", lambda fig: (drawn.append(fig), original(fig))[1])
    figures.group_harm_chart(["source=day-4", "source=day-1"], [3.0, -1.0])
    fig = drawn[0]
    fig.canvas.draw()
    label = fig.axes[0].xaxis.label.get_window_extent()
    assert "caused them" in fig.axes[0].get_xlabel()
    assert label.x0 >= 0 and label.x1 <= fig.bbox.width


def test_trace_grid_captions_are_loss_changes_like_the_cli(tmp_path, monkeypatch):
    """Why 7: trace_grid.png showed raw scores (−2.1e+02) beside the CLI's score / n_train
    (−0.158)."""
    import datasets
    import matplotlib.pyplot as plt
    import torch

    from influence.plots import save_trace_grid
    from influence.results import Ranking, TopK

    train = datasets.Dataset.from_dict({"input": [[0.0] * 4] * 50, "label": [1] * 50})
    test = datasets.Dataset.from_dict({"input": [[0.0] * 4], "label": [0]})
    top = TopK(helpful=Ranking(torch.tensor([[3]]), torch.tensor([[25.0]])),
               harmful=Ranking(torch.tensor([[7]]), torch.tensor([[-105.0]])))
    closed = []
    monkeypatch.setattr(plt, "close", lambda fig=None: closed.append(fig))
    save_trace_grid(str(tmp_path / "grid.png"), test, train, top, predicted=[1], image_shape=(2, 2))
    titles = [ax.get_title() for ax in closed[0].axes]
    assert titles[1].endswith("\n-2.1") and titles[2].endswith("\n+0.5")  # -105 / 50 and 25 / 50
