"""Pipelines in the Airflow style: a Python file that declares a workflow.

::

    from orch import Pipeline, PythonTask

    pipeline = Pipeline(name='test', schedule='0 0 * * * *')

    def print_test1():
        print('test1')

    def print_test2():
        print('test2')

    task_1 = PythonTask('print_test1', python_callable=print_test1, pipeline=pipeline)
    task_2 = PythonTask('print_test2', python_callable=print_test2, pipeline=pipeline)
    task_1.set_downstream(task_2)      # or task_1 >> task_2

orch evaluates such a file in a subprocess with a time limit
(``python -m orch pipeline FILE``), which prints each pipeline as a workflow
document (the format of ``docs/files.md``); each callable runs as a
``python_fn`` task of the file's module.  Importing the file again when a
task runs only builds these objects: nothing runs at import.
"""

import inspect

__all__ = ["Pipeline", "PythonTask"]

#: Every pipeline built in this process, in order.
_PIPELINES = []


class Pipeline:
    """A workflow: a name, an optional cron schedule and its tasks."""

    def __init__(self, name, schedule=None, *, params=None, keep_going=False,
                 max_parallel=None, description=None, catchup=False,
                 max_active_runs=None, timezone=None, events=None):
        if not isinstance(name, str) or not name:
            raise ValueError(f"Pipeline: name must be a non-empty str, got {name!r}")
        if schedule is not None and not isinstance(schedule, str):
            raise ValueError(f"Pipeline {name}: schedule must be a cron str, got {schedule!r}")
        self.name = name
        self.schedule = schedule
        self.params = dict(params or {})
        self.keep_going = bool(keep_going)
        self.max_parallel = max_parallel
        self.description = description
        self.catchup = bool(catchup)
        self.max_active_runs = max_active_runs
        self.timezone = timezone
        self.events = list(events or [])
        self.tasks = []
        self.line = _caller_line()
        _PIPELINES.append(self)

    def _add(self, task):
        if any(t.task_id == task.task_id for t in self.tasks):
            raise ValueError(f"Pipeline {self.name}: the task id {task.task_id!r} is used twice")
        self.tasks.append(task)

    def to_doc(self):
        """This pipeline as a workflow document (a dict)."""
        doc = {"name": self.name, "tasks": [t.to_doc() for t in self.tasks]}
        if self.description is not None:
            doc["description"] = self.description
        if self.schedule is not None:
            doc["schedule"] = self.schedule
        if self.timezone is not None:
            doc["timezone"] = self.timezone
        if self.catchup:
            doc["catchup"] = True
        if self.max_active_runs is not None:
            doc["max_active_runs"] = self.max_active_runs
        if self.params:
            doc["params"] = {k: {"default": v} for k, v in self.params.items()}
        if self.keep_going:
            doc["keep_going"] = True
        if self.max_parallel is not None:
            doc["max_parallel"] = self.max_parallel
        if self.events:
            doc["events"] = self.events
        return doc


class PythonTask:
    """A task that calls ``python_callable`` (a top-level function of the
    pipeline's file) with ``op_kwargs`` as keyword arguments; its return
    value is the task's output."""

    def __init__(self, task_id, python_callable, pipeline, *, op_kwargs=None,
                 retries=0, retry_delay=None, timeout=None):
        if not isinstance(task_id, str) or not task_id:
            raise ValueError(f"PythonTask: the task id must be a non-empty str, got {task_id!r}")
        if not isinstance(pipeline, Pipeline):
            raise ValueError(f"PythonTask {task_id}: pipeline must be a Pipeline, got {pipeline!r}")
        if not callable(python_callable):
            raise ValueError(f"PythonTask {task_id}: python_callable is not callable")
        qualname = getattr(python_callable, "__qualname__", "")
        if "." in qualname or "<" in qualname or not qualname:
            raise ValueError(
                f"PythonTask {task_id}: python_callable must be a top-level function of the "
                f"pipeline file (got {qualname or python_callable!r}), so that the task can import it")
        self.task_id = task_id
        self.callable = python_callable
        self.pipeline = pipeline
        self.op_kwargs = dict(op_kwargs or {})
        self.retries = retries
        self.retry_delay = retry_delay
        self.timeout = timeout
        self.upstream = []
        self.line = _caller_line()
        pipeline._add(self)

    def set_downstream(self, other):
        """``other`` (a task or a list of tasks) runs after this one."""
        for t in _tasks(other):
            t.set_upstream(self)
        return other

    def set_upstream(self, other):
        """This task runs after ``other`` (a task or a list of tasks)."""
        for t in _tasks(other):
            if t.pipeline is not self.pipeline:
                raise ValueError(
                    f"PythonTask {self.task_id}: {t.task_id} belongs to another pipeline")
            if t not in self.upstream:
                self.upstream.append(t)
        return other

    def __rshift__(self, other):
        self.set_downstream(other)
        return other

    def __lshift__(self, other):
        self.set_upstream(other)
        return other

    def __rrshift__(self, other):
        # [a, b] >> task
        self.set_upstream(other)
        return self

    def __rlshift__(self, other):
        # [a, b] << task
        self.set_downstream(other)
        return self

    def to_doc(self):
        """This task as a task document (a dict)."""
        module = self.callable.__module__
        doc = {"id": self.task_id, "python_fn": f"{module}:{self.callable.__qualname__}"}
        if self.upstream:
            doc["after"] = [t.task_id for t in self.upstream]
        if self.op_kwargs:
            doc["inputs"] = self.op_kwargs
        if self.retries:
            doc["retries"] = self.retries
        if self.retry_delay is not None:
            doc["retry_delay"] = _seconds(self.retry_delay)
        if self.timeout is not None:
            doc["timeout"] = _seconds(self.timeout)
        return doc


def _tasks(other):
    items = other if isinstance(other, (list, tuple)) else [other]
    for t in items:
        if not isinstance(t, PythonTask):
            raise ValueError(f"expected a PythonTask or a list of them, got {t!r}")
    return items


def _seconds(d):
    total = getattr(d, "total_seconds", None)
    return total() if total else d


def _caller_line():
    """The line of the pipeline file that built the object."""
    for frame in inspect.stack()[2:]:
        if frame.filename != __file__:
            return frame.lineno
    return None
