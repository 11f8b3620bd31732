"""FLOODGATE_EXECUTOR picks where every job's steps run (orchestration/executors.py); the
Celery one runs for real in test_celery_workers.py."""

import pytest

from orchestration.executors import ExecutorChoiceError, executor_from_env

JOBS = ("search_terms_weekly", "books", "product_catalog", "enrichment")


def jobs_executors(monkeypatch, **environment) -> set[str]:
    """The executor every job of a freshly loaded code location gets."""
    import importlib

    import orchestration.definitions as definitions

    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    try:
        reloaded = importlib.reload(definitions)
        return {reloaded.defs.resolve_job_def(job).executor_def.name for job in JOBS}
    finally:
        monkeypatch.undo()
        importlib.reload(definitions)


def test_every_job_runs_in_its_runs_process_by_default(monkeypatch):
    monkeypatch.delenv("FLOODGATE_EXECUTOR", raising=False)
    assert jobs_executors(monkeypatch) == {"in_process"}


@pytest.mark.parametrize(
    ("choice", "name"), [("multiprocess", "multiprocess"), ("k8s", "k8s"), ("celery", "floodgate_celery")]
)
def test_the_variable_moves_every_jobs_steps(monkeypatch, choice, name):
    environment = {"FLOODGATE_EXECUTOR": choice, "FLOODGATE_CELERY_BROKER_URL": "pyamqp://guest@127.0.0.1:5672//"}
    assert jobs_executors(monkeypatch, **environment) == {name}


def test_celery_without_a_broker_and_an_unknown_choice_say_what_is_missing(monkeypatch):
    monkeypatch.setenv("FLOODGATE_EXECUTOR", "celery")
    monkeypatch.delenv("FLOODGATE_CELERY_BROKER_URL", raising=False)
    with pytest.raises(ExecutorChoiceError, match="needs FLOODGATE_CELERY_BROKER_URL"):
        executor_from_env()
    monkeypatch.setenv("FLOODGATE_EXECUTOR", "spark")
    with pytest.raises(ExecutorChoiceError, match="one of 'in_process', 'multiprocess', 'celery', 'k8s', not 'spark'"):
        executor_from_env()
