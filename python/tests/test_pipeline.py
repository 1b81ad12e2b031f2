"""Tests for the Airflow-style pipeline API (orch.Pipeline, orch.PythonTask)
and its reader, ``python -m orch pipeline FILE``.

Run with:  cd python && python3 -m unittest discover -s tests -v
"""

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import unittest
from pathlib import Path

PYDIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PYDIR))
from orch import pipeline as pl  # noqa: E402
from orch import Pipeline, PythonTask  # noqa: E402


def f():
    return 1


def g():
    return 2


class PipelineTests(unittest.TestCase):
    def setUp(self):
        pl._PIPELINES.clear()

    def test_dependencies_every_way_airflow_writes_them(self):
        p = Pipeline("p", schedule="*/5 * * * *", params={"n": 3})
        a, b, c, d = (PythonTask(x, python_callable=f, pipeline=p) for x in "abcd")
        a >> [b, c]
        [b, c] >> d
        d << PythonTask("e", python_callable=g, pipeline=p, op_kwargs={"k": 1}, retries=2)
        doc = p.to_doc()
        after = {t["id"]: t.get("after", []) for t in doc["tasks"]}
        self.assertEqual(after, {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c", "e"], "e": []})
        self.assertEqual(doc["schedule"], "*/5 * * * *")
        self.assertEqual(doc["params"], {"n": {"default": 3}})
        e = next(t for t in doc["tasks"] if t["id"] == "e")
        self.assertEqual(e["python_fn"], f"{__name__}:g")
        self.assertEqual((e["inputs"], e["retries"]), ({"k": 1}, 2))

    def test_mistakes_are_refused_where_they_are_made(self):
        p = Pipeline("p")
        PythonTask("a", python_callable=f, pipeline=p)
        with self.assertRaisesRegex(ValueError, "used twice"):
            PythonTask("a", python_callable=f, pipeline=p)
        with self.assertRaisesRegex(ValueError, "top-level function"):
            PythonTask("l", python_callable=lambda: 1, pipeline=p)
        with self.assertRaisesRegex(ValueError, "another pipeline"):
            q = Pipeline("q")
            PythonTask("x", python_callable=f, pipeline=q) >> PythonTask("y", python_callable=f, pipeline=p)
        with self.assertRaisesRegex(ValueError, "name"):
            Pipeline("")


class ReaderTests(unittest.TestCase):
    def read(self, text):
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "flow.py"
            path.write_text(textwrap.dedent(text))
            env = dict(os.environ, PYTHONPATH=str(PYDIR))
            return subprocess.run([sys.executable, "-m", "orch", "pipeline", str(path)],
                                  capture_output=True, text=True, env=env, timeout=30)

    def test_prints_every_pipeline_with_its_lines_and_keeps_prints_off_stdout(self):
        r = self.read("""
            from orch import Pipeline, PythonTask
            print("chatter")
            p = Pipeline("one")
            q = Pipeline("two")
            def f(): pass
            PythonTask("a", python_callable=f, pipeline=p)
            PythonTask("b", python_callable=f, pipeline=q)
        """)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("chatter", r.stderr)
        printed = json.loads(r.stdout)
        names = [p["doc"]["name"] for p in printed["pipelines"]]
        self.assertEqual(names, ["one", "two"])
        self.assertEqual(printed["pipelines"][0]["line"], 4)
        self.assertEqual(printed["pipelines"][0]["lines"], {"a": 7})
        self.assertEqual(printed["pipelines"][0]["doc"]["tasks"][0]["python_fn"], "flow:f")

    def test_an_exception_is_a_traceback_and_status_1(self):
        r = self.read("raise ValueError('nope')\n")
        self.assertEqual(r.returncode, 1)
        self.assertIn("ValueError: nope", r.stderr)
        self.assertEqual(r.stdout, "")


if __name__ == "__main__":
    unittest.main()
