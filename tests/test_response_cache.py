"""The response cache on its own: answers written by one reader are found by another."""

from operators.response_cache import ResponseCache, request_key


def answer(text, tokens):
    return {"output": [text], "prompt_tokens": [3], "completion_tokens": [tokens], "finish_reason": ["stop"]}


def test_answers_are_shared_between_readers_and_files_are_never_rewritten(tmp_path):
    k1 = request_key("m", "one", None, "chat", {"max_tokens": 4, "temperature": 0.0, "seed": 0})
    k2 = request_key("m", "two", None, "chat", {"max_tokens": 4, "temperature": 0.0, "seed": 0})
    writer, reader = ResponseCache(str(tmp_path / "c")), ResponseCache(str(tmp_path / "c"))
    assert reader.lookup([k1, k2, None]) == {}  # no cache folder yet: nothing, no error
    first = writer.add([k1], answer("uno", 2))
    assert reader.lookup([k1, k2]) == {k1: {"output": "uno", "prompt_tokens": 3, "completion_tokens": 2,
                                            "finish_reason": "stop", "choices": None, "logprobs": None,
                                            "stop_sequence": None}}
    writer.add([k2], answer("dos", 5))  # a new file; the reader sees it at its next lookup
    assert reader.lookup([k2])[k2]["output"] == "dos"
    assert len(list((tmp_path / "c" / "entries").iterdir())) == 2 and (tmp_path / "c" / "entries").exists()
    assert first.endswith(".parquet")
