from pipelines.report.text import bar, format_table, percent


def test_table_aligns_numbers_right_and_text_left():
    out = format_table(["name", "n"], [["a", 5], ["longer", 123]]).splitlines()
    assert out[0] == "name      n"
    assert out[2] == "a         5"
    assert out[3] == "longer  123"


def test_percent_and_bar():
    assert percent(0.0123) == "1.23%"
    assert percent(None) == "-"
    assert bar(5, 10, width=10) == "#####"
    assert bar(20, 10, width=10) == "#" * 10
