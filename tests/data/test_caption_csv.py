"""``read_caption_csv``: a Flickr8k-style ``image,caption`` CSV whose captions hold unquoted commas
is read whole, never cut at the first comma."""

from __future__ import annotations

import pytest

from sfumato_data import DatasetError
from sfumato_data.files import read_caption_csv

COLUMNS = (("file_name", "text"), ("image", "caption"))


def test_an_unquoted_comma_in_the_last_column_stays_in_the_caption(tmp_path):
    path = tmp_path / "captions.csv"
    path.write_text("image,caption\n"
                    "a.jpg,A black dog , running on grass , jumps .\n"
                    'a.jpg,"a quoted one, with ""quotes"""\n'
                    "b.jpg,plain\n")
    assert read_caption_csv(path, COLUMNS) == {
        "a.jpg": ["A black dog , running on grass , jumps .", 'a quoted one, with "quotes"'],
        "b.jpg": ["plain"],
    }


def test_extra_fields_before_the_last_column_are_an_error_naming_the_line(tmp_path):
    path = tmp_path / "captions.csv"
    path.write_text("text,file_name\nfine,a.png\na dog, running,b.png\n")
    with pytest.raises(DatasetError, match=r"captions\.csv:3: 3 fields for the 2 columns.*quote"):
        read_caption_csv(path, COLUMNS)
