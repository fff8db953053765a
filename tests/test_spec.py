import pytest
import yaml

from pipelines.spec import PipelineSpec, SpecError, apply_overrides, load_spec, validate_spec

BASE = {"input": {"paths": "in/", "prompt_column": "text"}, "output": {"path": "out/"}}


def with_(section: str, **values) -> dict:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data.setdefault(section, {}).update(values)
    return data


def test_defaults_are_usable():
    spec = validate_spec(BASE)
    assert spec.input.paths == ["in/"]
    assert spec.model.name == "smollm2-135m"
    assert spec.sampling.max_tokens > 0
    assert spec.input.columns_read() == ["id", "text"]


@pytest.mark.parametrize(
    "section, values, message",
    [
        ("sampling", {"max_tokens": -3}, "sampling.max_tokens must be > 0, got -3"),
        ("sampling", {"temperature": -0.5}, "sampling.temperature must be >= 0, got -0.5"),
        ("sampling", {"top_p": 1.5}, "sampling.top_p must be <= 1, got 1.5"),
        ("sampling", {"max_tokns": 5}, "sampling.max_tokns is not a known field"),
        ("model", {"max_model_len": 0}, "model.max_model_len must be > 0, got 0"),
        ("compute", {"actors": 0}, "compute.actors must be > 0, got 0"),
        ("compute", {"min_actors": 3}, "set both min_actors and max_actors"),
        ("compute", {"min_actors": 3, "max_actors": 2}, "min_actors must be <= max_actors, got 3 > 2"),
        ("input", {"format": "xml"}, "input.format"),
        ("input", {"template": "Q: {q}"}, "set exactly one of prompt_column or template"),
        ("input", {"paths": []}, "must name at least one path"),
    ],
)
def test_invalid_values_are_named(section, values, message):
    with pytest.raises(SpecError) as err:
        validate_spec(with_(section, **values))
    assert message in str(err.value)


def test_every_problem_is_reported_at_once():
    data = with_("sampling", max_tokens=-3, top_p=0)
    del data["output"]
    with pytest.raises(SpecError) as err:
        validate_spec(data)
    text = str(err.value)
    assert "max_tokens must be > 0" in text and "top_p must be > 0" in text and "output is required" in text


@pytest.mark.parametrize(
    "template, message",
    [("Q: {0}", "must name a column"), ("Q: {}", "must name a column"), ("no fields", "at least one column"),
     ("Q: {unclosed", "template is not valid")],
)
def test_bad_templates(template, message):
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["input"] = {"paths": "in/", "template": template}
    with pytest.raises(SpecError, match=message):
        validate_spec(data)


def test_template_columns_are_read_once_each():
    data = {"input": {"paths": "x", "template": "{title}: {body} ({title})", "id_column": "doc"},
            "output": {"path": "o"}}
    assert validate_spec(data).input.columns_read() == ["doc", "title", "body"]


def test_overrides_parse_yaml_values_and_leave_the_original_alone():
    data = yaml.safe_load(yaml.safe_dump(BASE))
    out = apply_overrides(data, ["sampling.max_tokens=64", 'sampling.stop=["\\n"]', "compute.spot_resource=spot"])
    assert out["sampling"] == {"max_tokens": 64, "stop": ["\n"]}
    assert out["compute"]["spot_resource"] == "spot"
    assert "sampling" not in data


def test_bad_override_is_named():
    with pytest.raises(SpecError, match="dotted.key=value"):
        apply_overrides(BASE, ["sampling.max_tokens"])


def test_load_spec_from_yaml_with_output_flag(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(BASE))
    spec = load_spec(path, overrides=["sampling.max_tokens=7"], output="elsewhere/")
    assert spec.sampling.max_tokens == 7 and spec.output.path == "elsewhere/"


def test_load_spec_errors_name_the_file(tmp_path):
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("input: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)


def test_python_object_equals_yaml(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(BASE))
    assert load_spec(path) == PipelineSpec(**BASE)
