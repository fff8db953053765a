"""An engine that could not start raises EngineStartError, a typed and picklable error, and the
driver finds it by class through Ray's wrappers (pipelines/engine/failure.py); only Ray's
text-only ActorDiedError is read as text."""

import pickle

import pytest

import spotbatch
from operators.feeder import EngineFeeder
from pipelines.engine.failure import ADVICE, engine_start_failure
from spotbatch.errors import EngineFailed, EngineStartError


def a_model_setting_the_engine_refuses():
    raise ValueError("max_model_len 100000000 is past the model's 8192")


def test_an_engine_that_cannot_start_raises_engine_start_error_with_its_reason():
    with pytest.raises(EngineStartError) as raised:
        EngineFeeder(a_model_setting_the_engine_refuses)
    err = raised.value
    assert isinstance(err, EngineFailed) and isinstance(err, spotbatch.RunFailed)
    assert str(err) == "the engine did not start: ValueError(\"max_model_len 100000000 is past the model's 8192\")"
    assert err.reason == "ValueError(\"max_model_len 100000000 is past the model's 8192\")"


def test_engine_start_error_survives_pickling_with_its_message_and_fields():
    err = EngineStartError("ValueError('bad')", ADVICE)
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is EngineStartError and str(again) == str(err)
    assert (again.reason, again.advice) == ("ValueError('bad')", ADVICE)
    assert spotbatch.EngineStartError is EngineStartError


def ray_task_error(cause: BaseException):
    """What Ray hands the driver for an error raised in a task (a warm engine's call): the
    exception itself as its cause, and a traceback text that need not name it."""
    from ray.exceptions import RayTaskError

    return RayTaskError("EngineHost.run_units", "(the worker's traceback)", cause, proctitle="ray::EngineHost",
                        pid=1, ip="127.0.0.1")


@pytest.mark.parametrize("wrap", [
    lambda e: ray_task_error(e),
    lambda e: ray_task_error(e).as_instanceof_cause(),
    lambda e: pickle.loads(pickle.dumps(ray_task_error(e))).as_instanceof_cause(),  # as it crosses processes
], ids=["task error", "as instance of cause", "pickled"])
def test_the_driver_catches_an_engine_start_error_by_class_through_rays_wrappers(wrap):
    wrapped = wrap(EngineStartError("ValueError('max_model_len too long')\n  a second line\nmore"))
    failure = engine_start_failure(wrapped)
    assert isinstance(failure, EngineStartError)
    assert str(failure) == ("the engine did not start: ValueError('max_model_len too long'); a second line\n  "
                            + ADVICE)


def test_an_engine_start_error_raised_from_another_is_found_in_the_chain():
    try:
        try:
            raise EngineStartError("OSError('out of memory')")
        except EngineStartError as err:
            raise RuntimeError("the dataset's stream failed") from err
    except RuntimeError as outer:
        failure = engine_start_failure(outer)
    assert isinstance(failure, EngineStartError) and failure.reason == "OSError('out of memory')"
    assert engine_start_failure(ray_task_error(RuntimeError("a node was lost"))) is None  # not every error is one


def test_an_actors_constructor_error_keeps_only_its_text_and_is_read_so():
    """Ray's ActorDiedError keeps the creation task's traceback as text, naming the class."""
    ray_said = RuntimeError("The actor died because of an error raised in its creation task\nTraceback ...\n"
                            "spotbatch.errors.EngineStartError: the engine did not start: ValueError('bad dtype')\n"
                            "more")
    failure = engine_start_failure(ray_said)
    assert isinstance(failure, EngineStartError) and failure.reason.startswith("ValueError('bad dtype')")
