"""Where a run's steps execute: FLOODGATE_EXECUTOR chooses, once, for the whole code location.

- `in_process` (the default): every step in the run's own process. The assets hand each
  other files in the object store, so a process per step would only add start-up time
  (and the embedder's load) to each.
- `multiprocess`: a process per step on the run's machine.
- `celery`: each step is a task on a Celery broker (RabbitMQ), executed by whichever
  `dagster-celery` worker takes it, on any machine that shares the object store and the
  Dagster instance's storage (Postgres in production). The broker URL comes from
  FLOODGATE_CELERY_BROKER_URL (it may hold a password: it is read by Dagster at run time,
  never written into the run's config), the result backend from
  FLOODGATE_CELERY_BACKEND_URL (default `rpc://`, answers over the broker). Workers must
  run with the same FLOODGATE_EXECUTOR and code (docs/DEPLOYMENT.md shows the command).

- `k8s`: each step is a Kubernetes Job (dagster-k8s' `k8s_job_executor`), in a pod made
  like the run's own (image, namespace, secrets come from the K8sRunLauncher the Helm
  chart configures: deploy/helm/values.yaml, docs/DEPLOYMENT.md).
"""

from __future__ import annotations

import os

import dagster as dg

IN_PROCESS, MULTIPROCESS, CELERY, K8S = "in_process", "multiprocess", "celery", "k8s"
BROKER_VARIABLE, BACKEND_VARIABLE = "FLOODGATE_CELERY_BROKER_URL", "FLOODGATE_CELERY_BACKEND_URL"


class ExecutorChoiceError(ValueError):
    pass


def executor_from_env() -> dg.ExecutorDefinition:
    kind = os.environ.get("FLOODGATE_EXECUTOR", IN_PROCESS).strip().lower() or IN_PROCESS
    if kind == IN_PROCESS:
        return dg.in_process_executor
    if kind == MULTIPROCESS:
        return dg.multiprocess_executor
    if kind == CELERY:
        return celery_executor_from_env()
    if kind == K8S:
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    choices = ", ".join(f"'{k}'" for k in (IN_PROCESS, MULTIPROCESS, CELERY, K8S))
    raise ExecutorChoiceError(f"FLOODGATE_EXECUTOR must be one of {choices}, not {kind!r}")


def celery_executor_from_env() -> dg.ExecutorDefinition:
    from dagster_celery import celery_executor

    if not os.environ.get(BROKER_VARIABLE):
        raise ExecutorChoiceError(f"FLOODGATE_EXECUTOR=celery needs {BROKER_VARIABLE} (e.g. pyamqp://user@host:5672//)")
    config: dict = {
        "broker": {"env": BROKER_VARIABLE},
        # a worker holds one step at a time (dagster-celery's default reserves 4), so a step
        # that is ready goes to a worker that is free
        "config_source": {"worker_prefetch_multiplier": 1},
    }
    if os.environ.get(BACKEND_VARIABLE):
        config["backend"] = {"env": BACKEND_VARIABLE}
    return celery_executor.configured(config, name="floodgate_celery")
