import pytest

from training.markdown import table


def test_a_table_is_its_header_its_rule_and_a_line_per_row():
    assert table(["a", "b"], [["1", ""], ["x", "y"]]) == "| a | b |\n| --- | --- |\n| 1 |  |\n| x | y |\n"
    assert table(["only"], []) == "| only |\n| --- |\n"


def test_a_row_with_another_number_of_cells_is_refused():
    with pytest.raises(ValueError, match="a row of 1 cells under 2 headings"):
        table(["a", "b"], [["1"]])
