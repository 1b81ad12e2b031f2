"""Helper for Python tasks run by the orch workflow orchestrator.

A task is a subprocess that talks to the orchestrator in JSON lines (see
``docs/protocol.md``): it reads a start message on stdin, sends messages
(new nodes, edges, logs, its output) and gets one ``ack`` or ``error``
reply for each.  This module hides all of that::

    # a.py -- fan out into one node per item, then join them in `total`
    import orch

    ctx = orch.start()
    items = ctx.inputs.get("items", [])
    for i, item in enumerate(items):
        ctx.add_node(f"sq_{i}", script="square.py", name="sq", inputs={"x": item})
        ctx.add_edge(ctx.node, f"sq_{i}")
    ctx.add_node("total", script="total.py",
                 inputs={"parts": [orch.output_ref(f"sq_{i}") for i in range(len(items))]})
    ctx.output({"count": len(items)})

``start()`` moves the protocol stream to a private file descriptor: after it,
``print()`` and the output of child processes go to stderr (the attempt's
log) and can never be mistaken for protocol lines.  It also points file
descriptor 0 at ``/dev/null`` so that a child process cannot swallow the
orchestrator's replies.

A mutation the orchestrator rejects raises :class:`OrchError`; the task may
catch it and carry on (the rejected mutation is simply not part of the
attempt's batch).
"""

import io
import json
import os
import sys
import threading

__all__ = [
    "PROTOCOL_VERSION",
    "OrchError",
    "Context",
    "start",
    "context",
    "inputs",
    "output_ref",
    "add_node",
    "add_edge",
    "set_attrs",
    "set_edge_attrs",
    "promise",
    "output",
    "log",
    "fail",
    "Pipeline",
    "PythonTask",
]

#: The protocol version this helper speaks (the ``"orch"`` key of every line).
PROTOCOL_VERSION = 1


class OrchError(Exception):
    """The orchestrator rejected a message, or the protocol broke down.

    ``message`` is the orchestrator's (or the helper's) explanation and
    ``seq`` the sequence number of the message it answers (``None`` when the
    error is not tied to one message, e.g. a bad start message).
    """

    def __init__(self, message, seq=None):
        super().__init__(message)
        self.message = message
        self.seq = seq

    def __str__(self):
        return self.message


#: What the orchestrator keeps exactly (``orch::limits``, docs/fuzzing.md):
#: integers in ``-2**63 .. 2**64-1`` and values nested at most 64 levels
#: (a message is one level more).  It refuses the rest; the helper refuses
#: it first, before sending, with a ``ValueError`` that says why.
_INT_MIN, _INT_MAX = -(1 << 63), (1 << 64) - 1
_MAX_JSON_DEPTH = 64


def _check_limits(message):
    """Raise ValueError when *message* breaks a limit of the orchestrator."""
    stack = [(message, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            if not _INT_MIN <= value <= _INT_MAX:
                shown = str(value) if value.bit_length() < 128 else f"of {value.bit_length()} bits"
                raise ValueError(f"orch: integer {shown} does not fit in 64 bits "
                                 "(send it as a string)")
        elif isinstance(value, (dict, list, tuple)):
            # The message itself is the one level that does not count.
            if depth > _MAX_JSON_DEPTH:
                raise ValueError(f"orch: value nested deeper than {_MAX_JSON_DEPTH} levels "
                                 "(the orchestrator's limit MAX_JSON_DEPTH)")
            items = value.values() if isinstance(value, dict) else value
            stack.extend((v, depth + 1) for v in items)


def _dumps(obj):
    """Serialise *obj* as one line of compact JSON (raises before sending)."""
    _check_limits(obj)
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def output_ref(node, pointer=None):
    """Return an output reference for use anywhere inside a node's inputs.

    ``output_ref("A")`` stands for the whole output of node ``A``;
    ``output_ref("A", "/items/0")`` for the part of it that the JSON pointer
    selects.  A reference implies the edge ``A -> node``.
    """
    if not isinstance(node, str):
        raise TypeError(f"output_ref: node must be a str, not {type(node).__name__}")
    if pointer is None:
        return {"$output": node}
    if not isinstance(pointer, str):
        raise TypeError(f"output_ref: pointer must be a str, not {type(pointer).__name__}")
    return {"$output": node, "pointer": pointer}


class Context:
    """One task attempt, as described by the orchestrator's start message.

    Attributes:
        run: the run id (str).
        node: the id of the node this attempt runs (str).
        attempt: the attempt number, counting from 1 (int).
        task: the node's task description (dict with ``name``, ``kind``, ...).
        inputs: the node's inputs with output references resolved.
        upstream: a dict from each direct predecessor's node id to its
            output (useful when predecessors are added at run time).

    Get it from :func:`orch.start`; do not construct it yourself.
    """

    def __init__(self, start_message, reader, writer):
        self.run = start_message.get("run")
        self.node = start_message.get("node")
        self.attempt = start_message.get("attempt")
        self.task = start_message.get("task")
        self.inputs = start_message.get("inputs")
        self.upstream = start_message.get("upstream") or {}
        self._reader = reader
        self._writer = writer
        self._seq = 0
        self._lock = threading.Lock()
        self._broken = None

    def __repr__(self):
        return (f"<orch.Context run={self.run!r} node={self.node!r} "
                f"attempt={self.attempt!r}>")

    # -- transport ---------------------------------------------------------

    def _send(self, type_, fields):
        """Send one message and wait for its reply; return the seq used.

        Raises TypeError/ValueError (nothing sent) when the message is not
        JSON-serialisable or breaks a limit of the orchestrator (an integer
        beyond 64 bits, a value nested deeper than 64 levels), OrchError on
        an ``error`` reply or a broken stream.
        """
        with self._lock:
            if self._broken is not None:
                raise OrchError(self._broken)
            seq = self._seq + 1
            msg = {"orch": PROTOCOL_VERSION, "type": type_, "seq": seq}
            msg.update(fields)
            data = (_dumps(msg) + "\n").encode("utf-8")
            self._seq = seq
            try:
                self._writer.write(data)
                self._writer.flush()
            except OSError as e:
                self._broken = f"orch: cannot send {type_} (seq {seq}) to the orchestrator: {e}"
                raise OrchError(self._broken, seq) from None
            reply = self._read_reply(type_, seq)
        if reply.get("type") == "error":
            message = reply.get("message")
            if not isinstance(message, str):
                message = f"{type_} (seq {seq}) rejected"
            raise OrchError(message, seq)
        return seq

    def _read_reply(self, type_, seq):
        """Read and check the reply to message *seq* (lock held)."""
        try:
            line = self._reader.readline()
        except OSError as e:
            line = None
            problem = f"cannot read the reply: {e}"
        else:
            problem = "stdin closed (EOF) before the reply"
        if not line:
            self._broken = f"orch: no reply to {type_} (seq {seq}): {problem}"
            raise OrchError(self._broken, seq)
        text = line.decode("utf-8", errors="replace").strip()
        try:
            reply = json.loads(text)
        except ValueError:
            reply = None
        if (not isinstance(reply, dict) or reply.get("orch") != PROTOCOL_VERSION
                or reply.get("type") not in ("ack", "error")):
            self._broken = f"orch: bad reply to {type_} (seq {seq}): {text[:200]!r}"
            raise OrchError(self._broken, seq)
        if type(reply.get("seq")) is not int or reply["seq"] != seq:
            self._broken = (f"orch: reply out of sequence: expected seq {seq} "
                            f"(for {type_}), got {reply.get('seq')!r}: {text[:200]!r}")
            raise OrchError(self._broken, seq)
        return reply

    # -- messages ----------------------------------------------------------

    def add_node(self, id, *, script=None, module=None, function=None, argv=None,
                 task=None, name=None, inputs=None, attrs=None):
        """Add node *id* to the graph; return *id*.

        Say what the node runs with exactly one of:

        * ``script="m.py"`` -- a Python script (``kind: python``);
        * ``module="pkg.mod", function="fn"`` -- a function, run through
          ``python -m orch call`` (``kind: python_fn``);
        * ``argv=["sh", "-c", "..."]`` -- a command (``kind: command``);
        * ``task={...}`` -- a full task description, sent as is.

        ``name`` is the task name used by promises and pictures (default: the
        node id).  ``inputs`` (default ``{}``) may contain
        :func:`output_ref` references; ``attrs`` are cosmetic attributes.

        Raises ValueError for a bad combination of arguments and OrchError
        when the orchestrator rejects the node.
        """
        if not isinstance(id, str) or not id:
            raise ValueError(f"add_node: id must be a non-empty str, got {id!r}")
        if name is not None and not isinstance(name, str):
            raise ValueError(f"add_node {id}: name must be a str, got {name!r}")
        given = [label for label, present in (
            ("script", script is not None),
            ("module/function", module is not None or function is not None),
            ("argv", argv is not None),
            ("task", task is not None),
        ) if present]
        if len(given) != 1:
            raise ValueError(
                f"add_node {id}: give exactly one of script=, module=+function=, argv= "
                f"or task= (got {', '.join(given) if given else 'none'})")
        kind = given[0]
        if kind == "script":
            if not isinstance(script, str) or not script:
                raise ValueError(f"add_node {id}: script must be a non-empty str, got {script!r}")
            spec = {"name": name or id, "kind": "python", "script": script}
        elif kind == "module/function":
            if not isinstance(module, str) or not module:
                raise ValueError(f"add_node {id}: function= needs module= (a non-empty str), got {module!r}")
            if not isinstance(function, str) or not function:
                raise ValueError(f"add_node {id}: module= needs function= (a non-empty str), got {function!r}")
            spec = {"name": name or id, "kind": "python_fn", "module": module, "function": function}
        elif kind == "argv":
            if (isinstance(argv, (str, bytes)) or not isinstance(argv, (list, tuple))
                    or not argv or not all(isinstance(a, str) for a in argv)):
                raise ValueError(f"add_node {id}: argv must be a non-empty list of str, got {argv!r}")
            spec = {"name": name or id, "kind": "command", "argv": list(argv)}
        else:
            if not isinstance(task, dict):
                raise ValueError(f"add_node {id}: task must be a dict, got {task!r}")
            spec = dict(task)
            if "name" not in spec:
                spec["name"] = name or id
            elif name is not None and spec["name"] != name:
                raise ValueError(
                    f"add_node {id}: name={name!r} conflicts with task name {spec['name']!r}")
        self._send("add_node", {
            "id": id,
            "task": spec,
            "inputs": {} if inputs is None else inputs,
            "attrs": {} if attrs is None else attrs,
        })
        return id

    def add_edge(self, from_, to, attrs=None):
        """Add the edge ``from_ -> to`` (both nodes must exist already).

        Raises OrchError when the orchestrator rejects the edge (unknown
        node, cycle, target already started, ...).
        """
        self._send("add_edge", {"from": from_, "to": to,
                                "attrs": {} if attrs is None else attrs})

    def set_attrs(self, node, attrs=None, **more):
        """Merge cosmetic attributes into node *node*.

        ``set_attrs("A", color="red")`` and ``set_attrs("A", {"color": "red"})``
        are the same (keyword attributes win over the dict's).
        """
        self._send("set_attrs", {"node": node, "attrs": _merge_attrs(attrs, more)})

    def set_edge_attrs(self, from_, to, attrs=None, **more):
        """Merge cosmetic attributes into the edge ``from_ -> to``.

        Attributes come as a dict, as keywords, or both.
        """
        self._send("set_attrs", {"edge": {"from": from_, "to": to},
                                 "attrs": _merge_attrs(attrs, more)})

    def promise(self, p):
        """Declare a promise; *p* (a dict) is sent as is."""
        self._send("promise", {"promise": p})

    def rule(self, id, when, then):
        """Declare a rule: when the predicate *when* holds, the batch *then*
        (a list of mutation dicts, as in ``{"op": "add_node", ...}``) is
        committed once, with origin ``rule:<id>``.

        Predicates are dicts: ``{"closed": "task:pdf"}``,
        ``{"count": {"pattern": "M_*", "at_least": 3}}``,
        ``{"state": {"node": "a", "is": "succeeded"}}``, ``{"all": [...]}``.
        In an ``add_node``'s inputs, ``{"$collect": "task:pdf"}`` becomes the
        list of output references of every node the pattern selects when
        the rule fires. Raises OrchError when the rule is refused.
        """
        if not isinstance(id, str) or not id:
            raise ValueError(f"rule: id must be a non-empty str, got {id!r}")
        if not isinstance(then, (list, tuple)):
            raise ValueError(f"rule {id}: then must be a list of mutations, got {then!r}")
        self._send("rule", {"rule": {"id": id, "when": when, "then": list(then)}})
        return id

    def output(self, value):
        """Send the attempt's output (any JSON value; the last one sent wins)."""
        self._send("output", {"value": value})

    def log(self, message, level="info"):
        """Send a structured log line (``message`` is converted with str())."""
        self._send("log", {"message": str(message), "level": level})

    def fail(self, message, retry=True):
        """Fail this attempt on purpose and exit the process with status 1.

        ``retry=False`` makes the failure terminal (no further attempts).
        Never returns (raises SystemExit(1)), even when the message could not
        be delivered.
        """
        try:
            self._send("fail", {"message": str(message), "retry": bool(retry)})
        except OrchError as e:
            print(f"orch: fail: {e}", file=sys.stderr)
        sys.exit(1)


def _merge_attrs(attrs, more):
    merged = {}
    if attrs is not None:
        if not isinstance(attrs, dict):
            raise TypeError(f"attrs must be a dict, not {type(attrs).__name__}")
        merged.update(attrs)
    merged.update(more)
    return merged


_context = None
_start_lock = threading.Lock()


def start():
    """Read the start message and return the attempt's :class:`Context`.

    The first call reads the first line of stdin, checks it is a version-1
    ``start`` message and redirects file descriptors so that only the helper
    writes protocol lines; later calls return the same Context.  Raises
    OrchError when stdin is a terminal, empty or not a start message.
    """
    global _context
    with _start_lock:
        if _context is None:
            _context = _start()
        return _context


def _start():
    try:
        if os.isatty(0):
            raise OrchError("orch.start(): stdin is a terminal; this task must be run by "
                            "the orchestrator (it sends the start message on stdin)")
    except OSError:
        pass
    # Private copies of the protocol streams; os.dup() makes them
    # non-inheritable, so child processes never see them.
    reader = os.fdopen(os.dup(0), "rb")
    line = reader.readline()
    if not line:
        reader.close()
        raise OrchError("orch.start(): no start message (stdin is empty)")
    text = line.decode("utf-8", errors="replace").strip()
    try:
        msg = json.loads(text)
    except ValueError as e:
        reader.close()
        raise OrchError(f"orch.start(): the start message is not JSON ({e}): {text[:200]!r}") from None
    if not isinstance(msg, dict) or msg.get("orch") != PROTOCOL_VERSION or msg.get("type") != "start":
        reader.close()
        raise OrchError(f"orch.start(): expected a start message with orch == {PROTOCOL_VERSION}, "
                        f"got {text[:200]!r}")

    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    writer = os.fdopen(os.dup(1), "wb")
    # From now on fd 1 is stderr (print, child processes) and fd 0 is empty.
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    try:
        os.dup2(devnull, 0)
    finally:
        os.close(devnull)
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8",
                                  errors="backslashreplace", line_buffering=True)
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
    return Context(msg, reader, writer)


def context():
    """Return the attempt's Context (same as :func:`start`)."""
    return start()


def inputs():
    """Return the node's inputs (``start().inputs``)."""
    return start().inputs


def add_node(id, **kwargs):
    """Shortcut for ``start().add_node(...)``; see :meth:`Context.add_node`."""
    return start().add_node(id, **kwargs)


def add_edge(from_, to, attrs=None):
    """Shortcut for ``start().add_edge(...)``; see :meth:`Context.add_edge`."""
    return start().add_edge(from_, to, attrs)


def set_attrs(node, attrs=None, **more):
    """Shortcut for ``start().set_attrs(...)``; see :meth:`Context.set_attrs`."""
    return start().set_attrs(node, attrs, **more)


def set_edge_attrs(from_, to, attrs=None, **more):
    """Shortcut for ``start().set_edge_attrs(...)``; see :meth:`Context.set_edge_attrs`."""
    return start().set_edge_attrs(from_, to, attrs, **more)


def promise(p):
    """Shortcut for ``start().promise(p)``; see :meth:`Context.promise`."""
    return start().promise(p)


def output(value):
    """Shortcut for ``start().output(value)``; see :meth:`Context.output`."""
    return start().output(value)


def log(message, level="info"):
    """Shortcut for ``start().log(...)``; see :meth:`Context.log`."""
    return start().log(message, level)


def fail(message, retry=True):
    """Shortcut for ``start().fail(...)``: fail the attempt and exit with status 1."""
    return start().fail(message, retry)


from .pipeline import Pipeline, PythonTask  # noqa: E402  (the pipeline API)
