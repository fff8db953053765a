import pytest

from operators.prompts import PromptRenderer


def test_prompt_column_rows_and_their_errors():
    prompts, errors = PromptRenderer(prompt_column="text").render({"text": ["hello", None, "", "  \n", 5]})
    assert prompts == ["hello", None, None, None, None]
    assert errors == [None, "prompt is null", "prompt is empty", "prompt is empty", "prompt must be text, got int"]


def test_template_over_several_columns():
    r = PromptRenderer(template="Title: {title}\nBody: {body}")
    prompts, errors = r.render({"title": ["A", "B", None], "body": ["x", "", "z"]})
    assert prompts[:2] == ["Title: A\nBody: x", "Title: B\nBody: "]
    assert errors == [None, None, "column 'title' is null"]


def test_template_with_every_column_blank_is_empty():
    prompts, errors = PromptRenderer(template="Q: {q}").render({"q": [" "]})
    assert prompts == [None] and errors == ["prompt is empty"]


def test_template_values_that_are_not_text_are_formatted():
    prompts, _ = PromptRenderer(template="n={n}").render({"n": [3]})
    assert prompts == ["n=3"]


def test_needs_exactly_one_source():
    with pytest.raises(ValueError):
        PromptRenderer()
    with pytest.raises(ValueError):
        PromptRenderer(prompt_column="a", template="{a}")
