"""The providers' batch files, both ways, so a batch job moves onto your own GPUs unchanged.

One module per provider reads a request line into rows (the prompt, its own sampling, the
model it names) and writes result rows as the provider's result line:
- `openai.py`: OpenAI Batch API files, one module per endpoint (`openai_chat.py`,
  `openai_completions.py`, `openai_responses.py`), in its ENDPOINTS table;
- `anthropic.py`: Anthropic Message Batches requests and results;
- `training.py`: training data out (chat JSONL and prompt/response pairs), for distillation.
`batch_files.py` reads a provider's JSONL files into Parquet in the output folder, once per
version of the files, and the run then reads them like any input.

Every field a request holds is honoured with the provider's meaning, or the run is refused
before any engine starts, naming the file, the line and the field: a field dropped silently is
a wrong answer nobody notices.
"""

from pipelines.formats import anthropic, openai

PROVIDERS = {"openai_batch": openai, "anthropic_batch": anthropic}
# Every endpoint's module, by its url (batch_source.json names the one a run's files hold).
ENDPOINTS = {**openai.ENDPOINTS, anthropic.ENDPOINT: anthropic}
