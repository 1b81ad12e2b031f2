"""Run a Python function as an orch task: ``python -m orch call pkg.module:function``;
read a pipeline file: ``python -m orch pipeline FILE``.

This is how the orchestrator runs a ``python_fn`` task.  The function gets
the node's inputs as keyword arguments when they are a JSON object (no
arguments when they are null or ``{}``, one positional argument otherwise);
its return value becomes the attempt's output (``None`` becomes null).

Exit status: 0 on success, 1 when the function (or its module's import)
raises, 2 for a usage error or a bad ``module:function`` spec.
"""

import importlib
import sys
import traceback

import orch

USAGE = ("usage: python -m orch call package.module:function\n"
         "       python -m orch pipeline FILE.py")


class _SpecError(Exception):
    """The ``module:function`` spec does not name a callable."""


def _resolve(spec):
    """Import the module of *spec* and return the callable it names."""
    modname, sep, attrpath = spec.partition(":")
    if not sep or not modname or not attrpath:
        raise _SpecError(f"orch call: bad spec {spec!r}: expected package.module:function")
    if modname.startswith("."):
        raise _SpecError(f"orch call: bad spec {spec!r}: relative module names are not supported")
    try:
        obj = importlib.import_module(modname)
    except ModuleNotFoundError as e:
        # Only a missing module of the spec itself is a spec error; a missing
        # dependency inside the module is an ordinary failure (traceback).
        if e.name and (modname == e.name or modname.startswith(e.name + ".")):
            raise _SpecError(f"orch call: bad spec {spec!r}: no module named {e.name!r}") from None
        raise
    for part in attrpath.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise _SpecError(
                f"orch call: bad spec {spec!r}: {modname!r} has no attribute {attrpath!r}") from None
    if not callable(obj):
        raise _SpecError(
            f"orch call: bad spec {spec!r}: {attrpath!r} is not callable "
            f"(it is a {type(obj).__name__})")
    return obj


def pipeline(path):
    """Evaluate a pipeline file and print its pipelines as one JSON object on
    stdout: ``{"pipelines": [{"doc": ..., "line": N, "lines": {task: N}}]}``.

    What the file prints goes to stderr; an exception is a traceback on
    stderr and exit status 1.
    """
    import importlib.util
    import json
    import os

    from orch import pipeline as pipelines

    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    path = os.path.abspath(path)
    folder, name = os.path.split(path)
    module = os.path.splitext(name)[0]
    if not module.isidentifier():
        print(f"{path}: the file name must be a Python module name "
              f"(its functions run as {module}:function)", file=sys.stderr)
        return 2
    taken = set(getattr(sys, "stdlib_module_names", ())) | set(sys.builtin_module_names)
    if module in taken or module == "orch":
        print(f"{path}: the file name `{module}` is a module of Python's own (or orch's): "
              f"its tasks would import that one instead; rename the file", file=sys.stderr)
        return 2
    sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(module, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[module] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:  # SystemExit too: the file may not end the reader
        traceback.print_exc()
        return 1
    found = []
    for p in pipelines._PIPELINES:
        for t in p.tasks:
            if t.callable.__module__ in ("__main__", None):
                print(f"{path}:{t.line}: PythonTask {t.task_id}: python_callable "
                      f"comes from no importable module", file=sys.stderr)
                return 1
        found.append({
            "doc": p.to_doc(),
            "line": p.line,
            "lines": {t.task_id: t.line for t in p.tasks},
        })
    json.dump({"pipelines": found}, out)
    out.write("\n")
    out.flush()
    return 0


def main(argv=None):
    """Entry point; returns the process exit status."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if len(args) == 2 and args[0] == "pipeline":
        return pipeline(args[1])
    if len(args) != 2 or args[0] != "call":
        print(USAGE, file=sys.stderr)
        return 2
    spec = args[1]

    try:
        ctx = orch.start()
    except orch.OrchError as e:
        print(f"orch call {spec}: {e}", file=sys.stderr)
        return 1

    try:
        fn = _resolve(spec)
    except _SpecError as e:
        print(e, file=sys.stderr)
        return 2
    except Exception:
        traceback.print_exc()
        return 1

    inputs = ctx.inputs
    try:
        if inputs is None or inputs == {}:
            result = fn()
        elif isinstance(inputs, dict):
            result = fn(**inputs)
        else:
            result = fn(inputs)
        ctx.output(result)
    except Exception:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
