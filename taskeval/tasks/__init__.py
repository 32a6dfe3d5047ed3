"""Downstream tasks behind one contract (:mod:`taskeval.tasks.base`), in one registry.

Built-in: ``detection`` (ultralytics YOLO, COCO mAP), ``segmentation`` (smp DeepLabV3+, mIoU) and
``quality`` (fusion-quality metrics, nothing trained). A new task is one module with a
:class:`~taskeval.tasks.base.Task` subclass registered with :func:`register_task` (a file given with
``--plugin``, or an entry point in the ``taskeval.tasks`` group)::

    @register_task
    class Counting(Task):
        spec = TaskSpec(name="counting", short="cnt", labels="boxes", metrics=(Metric("mae", False, False),),
                        headline=("mae",))
        ...
"""

from __future__ import annotations

from taskeval.registry import Registry
from taskeval.tasks.base import (
    Cost,
    EvalContext,
    Evaluation,
    Execution,
    Metric,
    Task,
    TaskSpec,
    TrainContext,
    check_fractions,
)

TASKS: Registry[Task] = Registry("task", entry_point_group="taskeval.tasks",
                                 builtin_modules=("taskeval.tasks.detection", "taskeval.tasks.segmentation",
                                                  "taskeval.tasks.quality"))
BUILTIN_ORDER = ("detection", "segmentation", "quality")


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: register a :class:`Task` subclass under ``cls.spec.name`` (one instance is shared)."""
    if not isinstance(getattr(cls, "spec", None), TaskSpec):
        raise TypeError(f"{cls.__name__} needs a class attribute spec = TaskSpec(...)")
    TASKS.register(cls.spec.name, cls, cls(), source=cls.__module__)
    return cls


def get_task(name: str) -> Task:
    """The registered task called ``name`` (RegistryError with a suggestion otherwise)."""
    return TASKS.get(name).meta


def list_tasks() -> list[str]:
    """Registered task names, built-ins first in their usual order."""
    names = TASKS.list()
    return [n for n in BUILTIN_ORDER if n in names] + [n for n in names if n not in BUILTIN_ORDER]


def task_by_short(short: str) -> Task:
    """The task whose ``spec.short`` (or name) is ``short`` (``det`` -> detection)."""
    for name in list_tasks():
        task = get_task(name)
        if short in (task.spec.short, task.spec.name):
            return task
    from taskeval.errors import ConfigError

    raise ConfigError(f"unknown task {short!r}; tasks: " +
                      ", ".join(f"{get_task(n).spec.short} ({n})" for n in list_tasks()))


__all__ = ["TASKS", "Cost", "EvalContext", "Evaluation", "Execution", "Metric", "Task", "TaskSpec", "TrainContext",
           "check_fractions", "get_task", "list_tasks", "register_task", "task_by_short"]
