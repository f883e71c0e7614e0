"""`app.tabs.common`: errors and warnings shown in place, numbers rounded for reading, Markdown-safe text."""

import warnings

import pandas as pd
import pytest

pytest.importorskip("gradio")

from influence_app.tabs.common import in_place, md_text, plain_finding, readable
from influence.errors import InfluenceWarning, InvalidArgumentError


def test_our_errors_keep_the_outputs_and_say_why():
    @in_place(2)
    def handler(fail):
        if fail:
            raise InvalidArgumentError("the eval example must be an integer")
        return "table", "chart", ""

    assert handler(False) == ("table", "chart", "")
    kept = handler(True)
    assert [dict(v) for v in kept[:2]] == [{"__type__": "update"}] * 2
    assert kept[2] == "⚠ the eval example must be an integer"


@pytest.mark.filterwarnings("ignore:cg did not converge")  # gr.Warning outside a request warns instead of a toast
def test_influence_warnings_reach_the_status_line():
    @in_place(1)
    def handler():
        warnings.warn("cg did not converge: relative residual 0.01", InfluenceWarning)
        warnings.warn("cg did not converge: relative residual 0.01", InfluenceWarning)  # said once
        return "value", "done"

    value, status = handler()
    assert value == "value" and status == "done ⚠ warning: cg did not converge: relative residual 0.01"


def test_bugs_are_not_hidden():
    @in_place(1)
    def handler():
        raise KeyError("source")

    with pytest.raises(KeyError):
        handler()


def test_numbers_read_at_three_significant_digits():
    frame = pd.DataFrame({"train id": [3], "harm": [564480.4702305265], "share": [0.06299999999999994],
                          "loss change if removed": [-0.000123456], "count": [12]})
    shown = readable(frame).iloc[0].to_dict()
    assert shown == {"train id": 3, "harm": "564,000", "share": "6.3%",
                     "loss change if removed": "-0.000123", "count": 12}
    assert frame["harm"][0] == 564480.4702305265  # the original keeps full precision (downloads)


def test_text_is_shown_literally():
    assert md_text("<b>x</b> it's *5*") == "&lt;b&gt;x&lt;/b&gt; it's \\*5\\*"
    assert plain_finding("`education-num` and `hours` look swapped") == "‘education-num’ and ‘hours’ look swapped"
