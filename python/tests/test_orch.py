"""Tests for the orch task helper.

Every test drives a real task subprocess through pipes, playing the part of
the runtime: it writes the start message, reads each protocol line the task
emits and answers it with an ack or an error.

Run with:  cd python && python3 -m unittest discover -s tests -v
"""

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import unittest
from pathlib import Path

PYDIR = Path(__file__).resolve().parent.parent
EXAMPLES = PYDIR.parent / "examples"
TIMEOUT = 10  # seconds; a hung task is killed, which fails the test quickly

sys.path.insert(0, str(PYDIR))
import orch  # noqa: E402  (for the pure helpers only)


class Attempt:
    """One task subprocess, driven by the test as a fake runtime."""

    def __init__(self, argv, cwd, env=None):
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = str(PYDIR)
        full_env.pop("ORCH_EXAMPLE_SEED", None)
        full_env.pop("ORCH_EXAMPLE_K", None)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=full_env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.stray = []  # non-protocol stdout lines
        self._stderr = []
        self._drain = threading.Thread(target=self._read_stderr, daemon=True)
        self._drain.start()
        self._timer = threading.Timer(TIMEOUT, self.proc.kill)
        self._timer.start()

    def _read_stderr(self):
        self._stderr.append(self.proc.stderr.read())

    def write(self, obj):
        line = obj if isinstance(obj, str) else json.dumps(obj)
        try:
            self.proc.stdin.write(line.encode("utf-8") + b"\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass

    def start(self, node="T", inputs=None, task=None, attempt=1, run="run-1", upstream=None):
        self.write({"orch": 1, "type": "start", "run": run, "node": node,
                    "attempt": attempt,
                    "task": task or {"name": node, "kind": "python", "script": "t.py"},
                    "inputs": {} if inputs is None else inputs,
                    "upstream": upstream or {}})

    def recv(self):
        """Return the next protocol message (a dict), or None at EOF."""
        for raw in self.proc.stdout:
            line = raw.decode("utf-8")
            assert line.endswith("\n"), f"unterminated line {line!r}"
            if line.lstrip().startswith('{"orch"'):
                msg = json.loads(line)
                assert isinstance(msg, dict) and msg.get("orch") == 1, line
                return msg
            self.stray.append(line)
        return None

    def ack(self, seq):
        self.write({"orch": 1, "type": "ack", "seq": seq})

    def error(self, seq, message):
        self.write({"orch": 1, "type": "error", "seq": seq, "message": message})

    def close_stdin(self):
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass

    def finish(self):
        """Close stdin, wait for exit; return (exit status, stderr text)."""
        self.close_stdin()
        rest = self.recv()
        assert rest is None, f"unexpected protocol message {rest!r}"
        rc = self.proc.wait()
        self._drain.join()
        self._timer.cancel()
        self.proc.stdout.close()
        self.proc.stderr.close()
        return rc, self._stderr[0].decode("utf-8", errors="replace")


def run_acking(testcase, argv, cwd, env=None, **start):
    """Run a task to the end, acking everything; return (messages, rc, stderr)."""
    att = Attempt(argv, cwd, env)
    att.start(**start)
    msgs = []
    while (msg := att.recv()) is not None:
        msgs.append(msg)
        att.ack(msg["seq"])
    rc, err = att.finish()
    testcase.assertEqual([m["seq"] for m in msgs], list(range(1, len(msgs) + 1)),
                         f"seq must count from 1; stderr:\n{err}")
    testcase.assertEqual(att.stray, [], "stray lines on the protocol stream")
    return msgs, rc, err


def strip(msgs):
    """Messages without the orch/seq keys (checked separately)."""
    return [{k: v for k, v in m.items() if k not in ("orch", "seq")} for m in msgs]


class TaskTestCase(unittest.TestCase):
    """Writes task scripts into a temporary directory."""

    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self._tmp.name)

    def tearDown(self):
        self._tmp.cleanup()

    def script(self, source, name="t.py"):
        (self.dir / name).write_text(textwrap.dedent(source))
        return [sys.executable, name]

    def run_script(self, source, **start):
        return run_acking(self, self.script(source), self.dir, **start)


class HelperTests(TaskTestCase):

    def test_messages_and_seq(self):
        msgs, rc, err = self.run_script("""
            import orch
            ctx = orch.start()
            ctx.log("hi")
            ctx.log(42, level="warn")
            ctx.add_node("s", script="s.py", inputs={"x": orch.output_ref("T")})
            ctx.add_node("f", module="pkg.mod", function="fit", name="fit", attrs={"color": "red"})
            ctx.add_node("c", argv=["sh", "-c", "echo hi"])
            ctx.add_node("d", task={"kind": "python", "script": "d.py"})
            ctx.add_node("e", task={"name": "E", "kind": "python", "script": "e.py"})
            ctx.add_edge("T", "s")
            ctx.add_edge(from_="s", to="c", attrs={"label": "x"})
            ctx.set_attrs("s", color="blue", shape="box")
            ctx.set_attrs("c", {"color": "green"})
            ctx.set_edge_attrs("T", "s", {"style": "dashed"})
            ctx.promise({"task": "M", "count": 3})
            ctx.output({"done": True, "text": "żółw"})
        """)
        self.assertEqual(rc, 0, err)
        self.assertTrue(all(m["orch"] == 1 for m in msgs))
        self.assertEqual(strip(msgs), [
            {"type": "log", "message": "hi", "level": "info"},
            {"type": "log", "message": "42", "level": "warn"},
            {"type": "add_node", "id": "s", "task": {"name": "s", "kind": "python", "script": "s.py"},
             "inputs": {"x": {"$output": "T"}}, "attrs": {}},
            {"type": "add_node", "id": "f",
             "task": {"name": "fit", "kind": "python_fn", "module": "pkg.mod", "function": "fit"},
             "inputs": {}, "attrs": {"color": "red"}},
            {"type": "add_node", "id": "c",
             "task": {"name": "c", "kind": "command", "argv": ["sh", "-c", "echo hi"]},
             "inputs": {}, "attrs": {}},
            {"type": "add_node", "id": "d", "task": {"kind": "python", "script": "d.py", "name": "d"},
             "inputs": {}, "attrs": {}},
            {"type": "add_node", "id": "e", "task": {"name": "E", "kind": "python", "script": "e.py"},
             "inputs": {}, "attrs": {}},
            {"type": "add_edge", "from": "T", "to": "s", "attrs": {}},
            {"type": "add_edge", "from": "s", "to": "c", "attrs": {"label": "x"}},
            {"type": "set_attrs", "node": "s", "attrs": {"color": "blue", "shape": "box"}},
            {"type": "set_attrs", "node": "c", "attrs": {"color": "green"}},
            {"type": "set_attrs", "edge": {"from": "T", "to": "s"}, "attrs": {"style": "dashed"}},
            {"type": "promise", "promise": {"task": "M", "count": 3}},
            {"type": "output", "value": {"done": True, "text": "żółw"}},
        ])

    def test_lines_are_compact_single_line_utf8(self):
        path = self.script("""
            import orch
            orch.output({"s": "a\\nb", "u": "żółw"})
        """)
        att = Attempt(path, self.dir)
        att.start()
        raw = att.proc.stdout.readline()
        self.assertEqual(raw, '{"orch":1,"type":"output","seq":1,"value":{"s":"a\\nb","u":"żółw"}}\n'
                         .encode("utf-8"))
        att.ack(1)
        rc, err = att.finish()
        self.assertEqual(rc, 0, err)

    def test_context_attributes_and_idempotent_start(self):
        msgs, rc, err = self.run_script("""
            import orch
            ctx = orch.start()
            orch.output({"run": ctx.run, "node": ctx.node, "attempt": ctx.attempt,
                         "task": ctx.task, "inputs": ctx.inputs,
                         "same": orch.start() is ctx and orch.context() is ctx,
                         "inputs_fn": orch.inputs()})
        """, node="A", attempt=2, run="r-9", inputs={"n": 3},
            task={"name": "A", "kind": "python", "script": "t.py"})
        self.assertEqual(rc, 0, err)
        self.assertEqual(strip(msgs), [{"type": "output", "value": {
            "run": "r-9", "node": "A", "attempt": 2,
            "task": {"name": "A", "kind": "python", "script": "t.py"},
            "inputs": {"n": 3}, "same": True, "inputs_fn": {"n": 3}}}])

    def test_module_shortcuts(self):
        msgs, rc, err = self.run_script("""
            import orch
            orch.log("x", "debug")
            orch.add_node("n", script="n.py")
            orch.add_edge("T", "n")
            orch.set_attrs("n", {"a": 1}, b=2)
            orch.set_edge_attrs("T", "n", color="red")
            orch.promise({"p": 1})
            orch.output(None)
        """)
        self.assertEqual(rc, 0, err)
        self.assertEqual([m["type"] for m in msgs],
                         ["log", "add_node", "add_edge", "set_attrs", "set_attrs", "promise", "output"])
        self.assertEqual(msgs[3]["attrs"], {"a": 1, "b": 2})
        self.assertEqual(msgs[4]["edge"], {"from": "T", "to": "n"})
        self.assertEqual(msgs[-1]["value"], None)

    def test_error_reply_raises_orch_error(self):
        path = self.script("""
            import orch
            try:
                orch.add_edge("A", "B")
            except orch.OrchError as e:
                orch.log("caught: " + e.message)
                orch.output({"message": e.message, "str": str(e), "seq": e.seq,
                             "is_exception": isinstance(e, Exception)})
        """)
        att = Attempt(path, self.dir)
        att.start()
        msg = att.recv()
        self.assertEqual(strip([msg]), [{"type": "add_edge", "from": "A", "to": "B", "attrs": {}}])
        att.error(1, "add_edge A -> B: node `B` already started (state running)")
        log = att.recv()
        self.assertEqual((log["seq"], log["type"]), (2, "log"))
        self.assertEqual(log["message"], "caught: add_edge A -> B: node `B` already started (state running)")
        att.ack(2)
        out = att.recv()
        self.assertEqual(out["seq"], 3)
        self.assertEqual(out["value"], {
            "message": "add_edge A -> B: node `B` already started (state running)",
            "str": "add_edge A -> B: node `B` already started (state running)",
            "seq": 1, "is_exception": True})
        att.ack(3)
        rc, err = att.finish()
        self.assertEqual(rc, 0, err)

    def test_uncaught_error_reply_fails_the_task(self):
        path = self.script("""
            import orch
            orch.add_node("x", script="x.py")
        """)
        att = Attempt(path, self.dir)
        att.start()
        self.assertEqual(att.recv()["seq"], 1)
        att.error(1, "node `x` already exists")
        rc, err = att.finish()
        self.assertEqual(rc, 1)
        self.assertIn("OrchError: node `x` already exists", err)

    def test_stray_output_goes_to_stderr(self):
        msgs, rc, err = self.run_script("""
            import os, subprocess, sys
            import orch
            ctx = orch.start()
            print("hello")
            print('{"not":"protocol"}')
            print('{"orch":1,"type":"output","seq":1,"value":"forged"}')
            sys.stdout.write("via sys.stdout\\n")
            os.write(1, b"via fd 1\\n")
            subprocess.run([sys.executable, "-c", "print('from a child')"], check=True)
            ctx.output("real")
        """)
        self.assertEqual(rc, 0, err)
        self.assertEqual(strip(msgs), [{"type": "output", "value": "real"}])
        for text in ["hello", '{"not":"protocol"}', '"forged"', "via sys.stdout",
                     "via fd 1", "from a child"]:
            self.assertIn(text, err)

    def test_child_processes_cannot_read_replies(self):
        msgs, rc, err = self.run_script("""
            import subprocess, sys
            import orch
            orch.log("one")
            r = subprocess.run([sys.executable, "-c", "import sys; print(repr(sys.stdin.read()))"],
                               capture_output=True, text=True, timeout=5)
            orch.log("two")
            orch.output({"child_stdin": r.stdout.strip(), "input": sys.stdin.read()})
        """)
        self.assertEqual(rc, 0, err)
        self.assertEqual(strip(msgs)[-1], {"type": "output", "value": {"child_stdin": "''", "input": ""}})

    def test_unserialisable_values_raise_before_sending(self):
        msgs, rc, err = self.run_script("""
            import orch
            caught = []
            for value in (object(), {1, 2}, float("nan")):
                try:
                    orch.output({"v": value})
                except (TypeError, ValueError) as e:
                    caught.append(type(e).__name__)
            orch.output(caught)
        """)
        self.assertEqual(rc, 0, err)
        self.assertEqual(msgs, [{"orch": 1, "type": "output", "seq": 1,
                                 "value": ["TypeError", "TypeError", "ValueError"]}])

    def test_values_the_orchestrator_would_refuse_raise_before_sending(self):
        msgs, rc, err = self.run_script("""
            import orch
            caught = []
            deep = 1
            for _ in range(65):
                deep = [deep]
            for value in (2 ** 64, -(2 ** 63) - 1, 10 ** 100, deep):
                try:
                    orch.output({"v": value})
                except ValueError as e:
                    caught.append(str(e))
            orch.output({"caught": caught, "max": 2 ** 64 - 1, "min": -(2 ** 63), "ok": deep[0][0]})
        """)
        self.assertEqual(rc, 0, err)
        self.assertEqual(len(msgs), 1, msgs)
        value = msgs[0]["value"]
        self.assertEqual(value["caught"], [
            "orch: integer 18446744073709551616 does not fit in 64 bits (send it as a string)",
            "orch: integer -9223372036854775809 does not fit in 64 bits (send it as a string)",
            "orch: integer of 333 bits does not fit in 64 bits (send it as a string)",
            "orch: value nested deeper than 64 levels (the orchestrator's limit MAX_JSON_DEPTH)",
        ])
        self.assertEqual((value["max"], value["min"]), (2 ** 64 - 1, -(2 ** 63)))

    def test_add_node_argument_errors(self):
        msgs, rc, err = self.run_script("""
            import orch
            bad = [
                dict(),
                dict(script="a.py", argv=["x"]),
                dict(module="m"),
                dict(function="f"),
                dict(argv="echo hi"),
                dict(argv=[]),
                dict(task="nope"),
                dict(task={"name": "X", "kind": "python", "script": "a.py"}, name="Y"),
            ]
            errors = []
            for kwargs in bad:
                try:
                    orch.add_node("n", **kwargs)
                except ValueError as e:
                    errors.append(str(e))
                else:
                    errors.append("no error for %r" % kwargs)
            try:
                orch.add_node("", script="a.py")
            except ValueError as e:
                errors.append(str(e))
            orch.output(errors)
        """)
        self.assertEqual(rc, 0, err)
        self.assertEqual(len(msgs), 1, "nothing may be sent for a bad add_node")
        errors = msgs[0]["value"]
        self.assertEqual(len(errors), 9)
        self.assertIn("exactly one", errors[0])
        self.assertIn("none", errors[0])
        self.assertIn("script, argv", errors[1])
        self.assertIn("function", errors[2])
        self.assertIn("module", errors[3])
        self.assertIn("argv", errors[4])
        self.assertIn("argv", errors[5])
        self.assertIn("task", errors[6])
        self.assertIn("conflicts", errors[7])
        self.assertIn("id", errors[8])

    def test_reply_with_wrong_seq(self):
        path = self.script("""
            import sys
            import orch
            try:
                orch.log("a")
            except orch.OrchError as e:
                print("ERR1:", e.message, file=sys.stderr)
            try:
                orch.log("b")
            except orch.OrchError as e:
                print("ERR2:", e.message, file=sys.stderr)
            sys.exit(3)
        """)
        att = Attempt(path, self.dir)
        att.start()
        self.assertEqual(att.recv()["seq"], 1)
        att.ack(7)
        rc, err = att.finish()
        self.assertEqual(rc, 3)
        self.assertRegex(err, r"ERR1: .*expected seq 1.*got 7")
        self.assertIn("ERR2:", err)  # the stream is out of step: later calls fail too

    def test_eof_instead_of_reply(self):
        path = self.script("""
            import sys
            import orch
            try:
                orch.log("a")
            except orch.OrchError as e:
                print("ERR:", e.message, "seq", e.seq, file=sys.stderr)
                sys.exit(4)
        """)
        att = Attempt(path, self.dir)
        att.start()
        self.assertEqual(att.recv()["seq"], 1)
        att.close_stdin()
        rc, err = att.finish()
        self.assertEqual(rc, 4)
        self.assertIn("ERR: orch: no reply to log (seq 1)", err)
        self.assertIn("EOF", err)

    def test_bad_start_message(self):
        path = self.script("""
            import orch
            orch.start()
        """)
        for start in ({"orch": 1, "type": "ack", "seq": 1},
                      {"orch": 2, "type": "start", "node": "T"},
                      "not json"):
            with self.subTest(start=start):
                att = Attempt(path, self.dir)
                att.write(start)
                rc, err = att.finish()
                self.assertEqual(rc, 1)
                self.assertIn("OrchError: orch.start():", err)

    def test_no_start_message(self):
        path = self.script("""
            import orch
            orch.start()
        """)
        att = Attempt(path, self.dir)
        rc, err = att.finish()
        self.assertEqual(rc, 1)
        self.assertIn("no start message", err)

    def test_fail_exits_1(self):
        msgs, rc, err = self.run_script("""
            import orch
            orch.fail("boom", retry=False)
            print("unreachable")
        """)
        self.assertEqual(rc, 1)
        self.assertEqual(msgs, [{"orch": 1, "type": "fail", "seq": 1, "message": "boom", "retry": False}])
        self.assertNotIn("unreachable", err)
        self.assertNotIn("Traceback", err)

    def test_fail_exits_1_even_when_rejected(self):
        path = self.script("""
            import orch
            orch.start().fail(ValueError("bad input"))
        """)
        att = Attempt(path, self.dir)
        att.start()
        msg = att.recv()
        self.assertEqual(strip([msg]), [{"type": "fail", "message": "bad input", "retry": True}])
        att.error(1, "no")
        rc, err = att.finish()
        self.assertEqual(rc, 1)

    def test_output_ref(self):
        self.assertEqual(orch.output_ref("A"), {"$output": "A"})
        self.assertEqual(orch.output_ref("A", "/items/0"), {"$output": "A", "pointer": "/items/0"})
        self.assertTrue(issubclass(orch.OrchError, Exception))
        e = orch.OrchError("msg", 3)
        self.assertEqual((e.message, e.seq, str(e)), ("msg", 3, "msg"))


class CallTests(TaskTestCase):
    """``python -m orch call module:function``."""

    def setUp(self):
        super().setUp()
        pkg = self.dir / "pkg"
        pkg.mkdir()
        (pkg / "__init__.py").write_text("")
        (pkg / "mod.py").write_text(textwrap.dedent("""
            VALUE = 3

            def add(a, b=0):
                print("noise from add")
                return {"sum": a + b}

            def nothing():
                pass

            def reverse(xs):
                return xs[::-1]

            def boom(**kwargs):
                raise RuntimeError("kaboom")

            class Tools:
                @staticmethod
                def double(x):
                    return 2 * x
        """))
        (pkg / "broken.py").write_text("import no_such_dependency_xyz\n")

    def call(self, spec, inputs=None):
        return run_acking(self, [sys.executable, "-m", "orch", "call", spec], self.dir,
                          inputs=inputs, task={"name": "fn", "kind": "python_fn"})

    def test_kwargs_and_return_value(self):
        msgs, rc, err = self.call("pkg.mod:add", {"a": 2, "b": 3})
        self.assertEqual(rc, 0, err)
        self.assertEqual(strip(msgs), [{"type": "output", "value": {"sum": 5}}])
        self.assertIn("noise from add", err)

    def test_no_inputs_and_none_result(self):
        for inputs in ({}, None):
            with self.subTest(inputs=inputs):
                att = Attempt([sys.executable, "-m", "orch", "call", "pkg.mod:nothing"], self.dir)
                att.write({"orch": 1, "type": "start", "run": "r", "node": "n", "attempt": 1,
                           "task": {"name": "n", "kind": "python_fn"}, "inputs": inputs})
                msg = att.recv()
                self.assertEqual(msg, {"orch": 1, "type": "output", "seq": 1, "value": None})
                att.ack(1)
                rc, err = att.finish()
                self.assertEqual(rc, 0, err)

    def test_non_object_inputs_are_one_argument(self):
        msgs, rc, err = self.call("pkg.mod:reverse", [1, 2, 3])
        self.assertEqual(rc, 0, err)
        self.assertEqual(strip(msgs), [{"type": "output", "value": [3, 2, 1]}])

    def test_dotted_attribute(self):
        msgs, rc, err = self.call("pkg.mod:Tools.double", 21)
        self.assertEqual(rc, 0, err)
        self.assertEqual(msgs[-1]["value"], 42)

    def test_exception_exits_1_with_traceback(self):
        msgs, rc, err = self.call("pkg.mod:boom", {"x": 1})
        self.assertEqual(rc, 1)
        self.assertEqual(msgs, [])
        self.assertIn("Traceback", err)
        self.assertIn("RuntimeError: kaboom", err)

    def test_missing_dependency_is_not_a_spec_error(self):
        msgs, rc, err = self.call("pkg.broken:f")
        self.assertEqual(rc, 1)
        self.assertIn("no_such_dependency_xyz", err)
        self.assertIn("Traceback", err)

    def test_bad_spec_exits_2(self):
        for spec, why in (("pkg.mod", "expected package.module:function"),
                          ("pkg.nope:f", "no module named 'pkg.nope'"),
                          ("nopkg_xyz.mod:f", "no module named 'nopkg_xyz'"),
                          ("pkg.mod:missing", "has no attribute 'missing'"),
                          ("pkg.mod:VALUE", "is not callable")):
            with self.subTest(spec=spec):
                msgs, rc, err = self.call(spec)
                self.assertEqual(rc, 2)
                self.assertEqual(msgs, [])
                self.assertEqual(len(err.strip().splitlines()), 1, err)
                self.assertIn(repr(spec), err)
                self.assertIn(why, err)

    def test_usage_errors_exit_2(self):
        for args in ([], ["run", "pkg.mod:add"], ["call"], ["call", "a:b", "extra"]):
            with self.subTest(args=args):
                att = Attempt([sys.executable, "-m", "orch", *args], self.dir)
                rc, err = att.finish()
                self.assertEqual(rc, 2)
                self.assertIn("usage: python -m orch call", err)


class ExampleTests(unittest.TestCase):
    """The example task scripts, run one at a time with every message acked."""

    def run_example(self, folder, script, env=None, **start):
        return run_acking(self, [sys.executable, script], EXAMPLES / folder, env, **start)

    def test_step(self):
        for folder in ("static_pipeline", "random_branch"):
            msgs, rc, err = self.run_example(folder, "step.py", node="s", inputs={"x": 1})
            self.assertEqual(rc, 0, err)
            self.assertEqual([m["type"] for m in msgs], ["log", "output"])
            self.assertEqual(msgs[-1]["value"], {"node": "s", "inputs": {"x": 1}})

    def test_random_branch(self):
        # random.Random(0).choice(...) is "right", random.Random(1)... is "left".
        # `end` is registered by the workflow, so choose.py adds only the branch.
        msgs, rc, err = self.run_example("random_branch", "choose.py", {"ORCH_EXAMPLE_SEED": "0"},
                                         node="choose")
        self.assertEqual(rc, 0, err)
        self.assertEqual([(m["type"], m.get("id") or (m.get("from"), m.get("to"))) for m in msgs[1:]], [
            ("add_node", "right"),
            ("add_edge", ("choose", "right")), ("add_edge", ("right", "end")),
            ("output", (None, None))])
        self.assertEqual(msgs[-1]["value"], {"branch": "right"})

        msgs, rc, err = self.run_example("random_branch", "choose.py", {"ORCH_EXAMPLE_SEED": "1"},
                                         node="choose")
        self.assertEqual(rc, 0, err)
        nodes = [m for m in msgs if m["type"] == "add_node"]
        self.assertEqual([(m["id"], m["task"]["name"], m["task"]["script"]) for m in nodes],
                         [("left_1", "left_1", "step.py"), ("left_2", "left_2", "step.py")])
        self.assertEqual([(m["from"], m["to"]) for m in msgs if m["type"] == "add_edge"],
                         [("choose", "left_1"), ("left_1", "left_2"), ("left_2", "end")])
        self.assertEqual(msgs[-1]["value"], {"branch": "left"})

    def test_random_map(self):
        # B is registered by the workflow; a.py adds the M_i between A and B.
        msgs, rc, err = self.run_example("random_map", "a.py", {"ORCH_EXAMPLE_K": "3"}, node="A")
        self.assertEqual(rc, 0, err)
        nodes = {m["id"]: m for m in msgs if m["type"] == "add_node"}
        self.assertEqual(list(nodes), ["M_0", "M_1", "M_2"])
        self.assertEqual(nodes["M_2"]["task"], {"name": "M", "kind": "python", "script": "m.py"})
        self.assertEqual(nodes["M_2"]["inputs"], {"i": 2})
        self.assertEqual([(m["from"], m["to"]) for m in msgs if m["type"] == "add_edge"],
                         [("A", "M_0"), ("M_0", "B"), ("A", "M_1"), ("M_1", "B"),
                          ("A", "M_2"), ("M_2", "B")])
        self.assertEqual(msgs[-1]["value"], {"k": 3})

        msgs, rc, err = self.run_example("random_map", "a.py", {"ORCH_EXAMPLE_K": "0"}, node="A")
        self.assertEqual(rc, 0, err)
        self.assertEqual(strip(msgs[1:]), [
            {"type": "add_edge", "from": "A", "to": "B", "attrs": {}},
            {"type": "output", "value": {"k": 0}}])

        msgs, rc, err = self.run_example("random_map", "m.py", node="M_3", inputs={"i": 3})
        self.assertEqual((rc, msgs[-1]["value"]), (0, 9), err)
        msgs, rc, err = self.run_example("random_map", "b.py", node="B",
                                         upstream={"M_0": 0, "M_1": 1, "M_2": 4})
        self.assertEqual((rc, msgs[-1]["value"]), (0, {"sum": 5, "count": 3}), err)

    def test_fully_dynamic(self):
        msgs, rc, err = self.run_example("fully_dynamic", "expand.py", node="root")
        self.assertEqual(rc, 0, err)
        self.assertEqual(strip(msgs), [
            {"type": "add_node", "id": "root.0",
             "task": {"name": "expand", "kind": "python", "script": "expand.py"},
             "inputs": {"depth": 1, "fanout": 2}, "attrs": {}},
            {"type": "add_edge", "from": "root", "to": "root.0", "attrs": {}},
            {"type": "add_node", "id": "root.1",
             "task": {"name": "expand", "kind": "python", "script": "expand.py"},
             "inputs": {"depth": 1, "fanout": 2}, "attrs": {}},
            {"type": "add_edge", "from": "root", "to": "root.1", "attrs": {}},
            {"type": "output", "value": {"depth": 2, "children": ["root.0", "root.1"]}}])

        msgs, rc, err = self.run_example("fully_dynamic", "expand.py", node="root.1.0",
                                         inputs={"depth": 0, "fanout": 2})
        self.assertEqual(rc, 0, err)
        self.assertEqual(strip(msgs), [{"type": "output", "value": {"depth": 0, "children": []}}])


if __name__ == "__main__":
    unittest.main()
