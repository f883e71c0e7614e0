"""`influence.progress.phase`: a long phase is announced once, with its estimate and hint."""

import logging

from influence import progress


def test_a_phase_estimated_over_a_minute_is_announced_once(monkeypatch, caplog):
    clock = iter([0.0, 3.0, 6.0, 9.0])  # start, then after each update
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    with caplog.at_level(logging.WARNING, logger="influence"):
        with progress.phase("self-influence", total=1000, enabled=False, hint="use method='auto'") as bar:
            bar.update(10)   # 3 s for 10 of 1000: ~5 min to go
            bar.update(10)
            bar.update(10)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1
    assert "self-influence: about 5 min more" in messages[0] and "use method='auto'" in messages[0]


def test_a_short_phase_says_nothing(monkeypatch, caplog):
    clock = iter([0.0, 3.0])
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    with caplog.at_level(logging.WARNING, logger="influence"):
        with progress.phase("gradients", total=100, enabled=False) as bar:
            bar.update(90)  # 3 s for 90%: 0.3 s to go
    assert not caplog.records
