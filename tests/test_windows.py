"""The shared windowing: stride windows, whole-word windows, and the max-context owner of each position."""

from __future__ import annotations

from bertkit.data.windows import max_context_owners, overlapping_windows, stride_windows


def test_stride_windows_cover_every_position_without_gaps():
    assert stride_windows(10, 4, 3) == [(0, 4), (3, 7), (6, 10)]
    assert stride_windows(10, 4, 9) == [(0, 4), (4, 8), (8, 10)]  # a stride past the window is cut to it
    assert stride_windows(0, 4, 2) == [(0, 0)]


def test_overlapping_windows_share_whole_words():
    windows = overlapping_windows([2, 1, 3, 1, 2], budget=4, overlap=1)
    assert windows == [(0, 2), (1, 3), (2, 4), (3, 5)]
    assert all(sum([2, 1, 3, 1, 2][a:b]) <= 4 for a, b in windows)


def test_max_context_prefers_the_most_central_window_first_on_ties():
    windows = stride_windows(10, 4, 3)
    owners = max_context_owners([1] * 10, windows)
    assert owners == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]  # 3 and 6 sit at an edge of both windows: the first wins
    assert max_context_owners([1, 1], [(0, 2), (0, 2)]) == [0, 0]
