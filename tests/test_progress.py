"""Progress of long loops: plain lines when stderr is a log (rich draws nothing there), none when disabled."""

from __future__ import annotations

import math

from vlfuse.progress import format_seconds, logged, track


def test_a_short_loop_stays_silent_in_a_log(capsys):
    assert list(track(range(4), "Embedding images")) == [0, 1, 2, 3]  # captured stderr is not a terminal
    assert capsys.readouterr().err == ""  # under 30 s: nothing, so a one-line error stays one line


def test_a_long_loop_gets_lines_with_the_count_and_an_eta_then_one_at_the_end(capsys):
    assert list(logged(iter("abc"), "Reading", total=3, every=0)) == ["a", "b", "c"]
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" · ")[0] for line in lines] == ["Reading: 1/3 (33%)", "Reading: 2/3 (67%)",
                                                          "Reading: 3/3 (100%)", "Reading: 3/3 (100%)"]
    assert all("ETA" in line for line in lines[:3]) and lines[-1].endswith(" · done")
    list(logged((x for x in range(2)), "Counting", every=0))  # no length: a count alone
    assert capsys.readouterr().err.splitlines()[-1].startswith("Counting: 2 · ")


def test_disabled_progress_is_silent(capsys):
    assert list(track(range(3), "Quiet", enabled=False)) == [0, 1, 2]
    assert capsys.readouterr().err == ""


def test_durations_read_as_minutes_or_hours():
    assert format_seconds(7) == "0m 07s" and format_seconds(187) == "3m 07s" and format_seconds(3900) == "1h 05m"
    assert format_seconds(math.inf) == "?"
