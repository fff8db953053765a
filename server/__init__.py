"""`spotbatch serve`: OpenAI's Files and Batches API, and Anthropic's Message Batches, in front
of spotbatch runs.

An entry point like jobs/ (it turns HTTP requests into runs), with no state of its own: files,
batch objects and each batch's run live in its store (server/state.py), so a server killed and
started again on the same store carries on every batch it was running.

    app.py        the FastAPI app and serve() (uvicorn)
    config.py     serve.yaml: the model names requests use -> spotbatch models and compute
    keys.py       API keys (sha256 hashes), constant-time checks, each key its own tenant
    state.py      the store: files, batch objects, run outputs
    objects.py    OpenAI's objects and error body
    validate.py   a batch's input file checked line by line (errors.data with line numbers)
    driver.py     the thread that runs batches, one at a time, each a spotbatch run
    finish.py     a finished run's output and error files, usage and cost
    files_api.py, batches_api.py   the routes
    anthropic_*.py  Anthropic's Message Batches: the door (x-api-key, anthropic-version, its
                  error body), the requests checked at create, the objects, the results, the routes
"""
