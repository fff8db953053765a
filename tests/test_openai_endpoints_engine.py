"""`/v1/completions` and `/v1/responses` batch files through the CLI with the built-in model
(real vLLM engine, SmolLM2, the session's one Ray cluster): each field by its effect, and each
exported line parsed with the `openai` SDK's own types."""

from __future__ import annotations

import json

import jsonschema
import pytest
from openai.types import Completion
from openai.types.responses import Response
from transformers import AutoTokenizer

from tests.helpers import spotbatch, write_spec

pytestmark = pytest.mark.engine


def run_and_export(tmp_path, ray_cluster, lines: list[dict]) -> dict[str, dict]:
    """The batch file run through `spotbatch run` and exported as OpenAI's output: each body by custom_id."""
    batch = tmp_path / "batch.jsonl"
    batch.write_text("".join(json.dumps(x) + "\n" for x in lines))
    spec = write_spec(tmp_path / "spec.yaml", {
        "input": {"kind": "openai_batch", "paths": str(batch)}, "compute": {"engine_threads": 2},
        "model": {"name": "smollm2-135m", "enforce_eager": True, "max_model_len": 512},
        "output": {"path": str(tmp_path / "out")}})
    proc = spotbatch("run", str(spec), "--address", ray_cluster)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = tmp_path / "batch_output.jsonl"
    proc = spotbatch("export", str(tmp_path / "out"), "--format", "openai-batch", "--to", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "batch_output.errors.jsonl").read_text() == ""
    answers = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(a["custom_id"] for a in answers) == sorted(x["custom_id"] for x in lines)  # one line per request
    return {a["custom_id"]: a["response"]["body"] for a in answers}


def completion(custom_id: str, **body) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/completions", "body": {"model": "m", **body}}


def test_a_completions_file_runs_raw_prompts_and_exports_text_completions(tmp_path, ray_cluster, smollm2):
    prompt = "The capital of France is"
    bodies = run_and_export(tmp_path, ray_cluster, [
        completion("echo", prompt=prompt, echo=True, max_tokens=4, temperature=0),
        completion("logprobs", prompt="One, two, three,", logprobs=3, max_tokens=3, temperature=0),
        completion("several", prompt=["Red is", "Blue is"], n=2, max_tokens=3, temperature=0.8, seed=1),
        completion("defaults", prompt="Once upon a time"),
    ])
    parsed = {k: Completion.model_validate(v) for k, v in bodies.items()}
    echo = parsed["echo"]
    assert echo.choices[0].text.startswith(prompt) and len(echo.choices[0].text) > len(prompt)
    # The prompt went to the engine as it is: no chat template around it.
    tokens = AutoTokenizer.from_pretrained(str(smollm2))
    assert echo.usage.prompt_tokens == len(tokens.encode(prompt))
    logprobs = parsed["logprobs"].choices[0].logprobs
    assert len(logprobs.tokens) == 3 and all(len(top) == 3 for top in logprobs.top_logprobs)
    assert "".join(logprobs.tokens) == parsed["logprobs"].choices[0].text and logprobs.text_offset[0] == 0
    several = parsed["several"]
    assert [c.index for c in several.choices] == [0, 1, 2, 3]  # two prompts x n=2
    assert several.usage.prompt_tokens == len(tokens.encode("Red is")) + len(tokens.encode("Blue is"))
    assert parsed["defaults"].usage.completion_tokens <= 16  # OpenAI's default max_tokens for completions


ANSWER = {"type": "object", "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}},
          "required": ["answer"], "additionalProperties": False}


def test_a_responses_file_runs_and_its_json_schema_answer_validates(tmp_path, ray_cluster, smollm2):
    bodies = run_and_export(tmp_path, ray_cluster, [
        {"custom_id": "schema", "method": "POST", "url": "/v1/responses", "body": {
            "model": "m", "instructions": "Answer in JSON.", "max_output_tokens": 60, "temperature": 0,
            "input": [{"role": "user", "content": [{"type": "input_text", "text": "Is the sky blue?"}]}],
            "text": {"format": {"type": "json_schema", "name": "answer", "schema": ANSWER, "strict": True}},
            "metadata": {"team": "search"}}},
        {"custom_id": "cut", "url": "/v1/responses", "body": {"input": "Tell me a long story.",
                                                              "max_output_tokens": 3}},
    ])
    schema = Response.model_validate(bodies["schema"])
    assert schema.status == "completed" and schema.metadata == {"team": "search"}
    jsonschema.validate(json.loads(schema.output_text), ANSWER)
    cut = Response.model_validate(bodies["cut"])
    assert (cut.status, cut.incomplete_details.reason) == ("incomplete", "max_output_tokens")
    assert cut.usage.output_tokens == 3
