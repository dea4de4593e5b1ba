"""The report's charts: a label the font cannot draw is said once, not once per character."""

from __future__ import annotations

import warnings

from matplotlib.figure import Figure

from janus_ray.report import plots
from janus_ray.report.plots import _png


def test_a_folder_name_in_a_script_the_font_lacks_gives_one_warning_naming_its_characters():
    """A new user's trial: a CJK folder name printed 8 lines of matplotlib 'Glyph ... missing'."""
    fig = Figure()
    fig.add_subplot().barh(["日本語", "plain"], [1.0, 2.0])
    plots._GLYPHS_REPORTED.clear()  # another test may have drawn these characters
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        png = _png(fig)
    messages = [str(w.message) for w in caught]
    assert png.startswith(b"\x89PNG")
    assert not any("missing from font" in m for m in messages), messages
    assert len(messages) == 1 and "3 character(s) its font has no glyph for" in messages[0]
    assert all(ch in messages[0] for ch in "日本語")
    with warnings.catch_warnings(record=True) as again:  # the next chart with the same names: silent
        warnings.simplefilter("always")
        _png(fig)
    assert [str(w.message) for w in again] == []
