"""The shared cue pass: every cue-based detector's cues found in one search per text."""

from __future__ import annotations

import re

from llmops.privacy import cues
from llmops.privacy.pii import scan_text

_VALUE = re.compile(r"\d{3}")


def test_cues_are_whole_words() -> None:
    """Expect a cue inside a longer word ("Adobe", "Nirvana") not to introduce a value (the NIR is
    written compact: in its official grouping it is found without a cue)."""
    assert [s.pii_type for s in scan_text("Adobe 12/03/1984 and Nirvana 184127645108946")] == []


def test_each_group_sees_only_its_cues() -> None:
    """Expect a value after one detector's cue to be found for that detector only."""
    cues.define("test_group_a", "alpha cue")
    cues.define("test_group_b", "beta cue")
    text = "Alpha cue 123\x00beta cue: 456"
    assert [m.group() for m in cues.after_cues(text, "test_group_a", _VALUE, 5)] == ["123"]
    assert [m.group() for m in cues.after_cues(text, "test_group_b", _VALUE, 5)] == ["456"]


def test_value_never_taken_from_the_next_row() -> None:
    """Expect the window after a cue to stop at the row separator."""
    cues.define("test_group_c", "gamma cue")
    assert list(cues.after_cues("gamma cue\x00123", "test_group_c", _VALUE, 5)) == []


def test_cue_found_in_every_case_variant() -> None:
    """Expect written, capitalised, capitals and headline spellings of a cue to count."""
    for text in (
        "date of birth 1984-03-12",
        "Date of birth 1984-03-12",
        "DATE OF BIRTH 1984-03-12",
        "Date Of Birth 1984-03-12",
        "Date of Birth 1984-03-12",
    ):
        assert [s.pii_type for s in scan_text(text)] == ["date_of_birth"], text
