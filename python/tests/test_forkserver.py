"""Tests for the fork server (``orch._forkserver``), driven over its
control socket the way the orchestrator drives it: real server process,
real forks, real pipes passed with SCM_RIGHTS.

Run with:  cd python && python3 -m unittest discover -s tests -v
"""

import array
import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest
from pathlib import Path

PYDIR = Path(__file__).resolve().parent.parent
TIMEOUT = 10


class Server:
    """A fork server subprocess and our end of its control socket."""

    def __init__(self, cwd, preload=(), spares=None):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ)
        env["PYTHONPATH"] = f"{PYDIR}:{cwd}"
        env["ORCH_FORK_PRELOAD"] = json.dumps(list(preload))
        env.pop("ORCH_FORK_SPARES", None)
        if spares is not None:
            env["ORCH_FORK_SPARES"] = str(spares)
        fd = theirs.fileno()

        def to_fd_3():
            os.dup2(fd, 3)

        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-c",
             "import sys, orch._forkserver as s; sys.exit(s.main())"],
            cwd=cwd, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=to_fd_3, close_fds=False)
        theirs.close()
        self.sock = ours
        self.sock.settimeout(TIMEOUT)
        self.next_id = 0

    def recv(self):
        return json.loads(self.sock.recv(65536).decode("utf-8"))

    def fork(self, cwd, script=None, call=None, argv=None, env=None):
        """Sends one request; returns (id, stdin w, stdout r, stderr r)."""
        self.next_id += 1
        pipes = [os.pipe() for _ in range(3)]
        marker = os.memfd_create("orch:test:marker")
        child_ends = [pipes[0][0], pipes[1][1], pipes[2][1], marker]
        request = {"id": self.next_id, "script": script, "call": call,
                   "argv": argv or [script or "call"], "cwd": str(cwd),
                   "env": env or {}}
        self.sock.sendmsg([json.dumps(request).encode("utf-8")],
                          [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                            array.array("i", child_ends))])
        for fd in child_ends:
            os.close(fd)
        return (self.next_id, os.fdopen(pipes[0][1], "wb"),
                os.fdopen(pipes[1][0], "rb"), os.fdopen(pipes[2][0], "rb"))

    def children(self):
        """Pids of the server's living children (its spares, when it runs
        no attempt)."""
        found = set()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_bytes()
            except OSError:
                continue
            fields = stat[stat.rindex(b")") + 2:].split()
            if int(fields[1]) == self.proc.pid and fields[0] not in (b"Z", b"X"):
                found.add(int(entry))
        return found

    def spares(self, count):
        """Waits until the server has *count* children; returns them."""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            kids = self.children()
            if len(kids) == count:
                return kids
            time.sleep(0.01)
        raise AssertionError(f"the server has {self.children()} children, not {count}")

    def close(self):
        self.sock.close()
        try:
            self.proc.wait(TIMEOUT)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.proc.stderr.close()


class ForkServerTest(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self.tmp.name)

    def tearDown(self):
        self.tmp.cleanup()

    def write(self, name, text):
        (self.dir / name).write_text(textwrap.dedent(text))
        return str(self.dir / name)

    def test_forks_a_child_with_the_given_stdio_group_env_and_exit_code(self):
        script = self.write("t.py", """\
            import os, sys
            line = sys.stdin.readline().strip()
            print(f"got {line} node={os.environ['ORCH_NODE']} argv={sys.argv[1:]}")
            print("to stderr", file=sys.stderr)
            print(f"group leader {os.getpgid(0) == os.getpid()}")
            sys.exit(7)
            """)
        server = Server(self.dir)
        try:
            ready = server.recv()
            self.assertEqual(ready["type"], "ready")
            self.assertEqual(ready["pid"], server.proc.pid)
            ident, stdin, stdout, stderr = server.fork(
                self.dir, script=script, argv=[script, "x"], env={"ORCH_NODE": "N"})
            started = server.recv()
            self.assertEqual(started["type"], "started")
            self.assertEqual(started["id"], ident)
            stdin.write(b"hello\n")
            stdin.close()
            self.assertEqual(stdout.read().decode().splitlines(),
                             ["got hello node=N argv=['x']", "group leader True"])
            self.assertEqual(stderr.read(), b"to stderr\n")
            stdout.close()
            stderr.close()
            self.assertEqual(server.recv(), {"type": "exit", "id": ident, "code": 7})
        finally:
            server.close()
        self.assertEqual(server.proc.returncode, 0, "exits 0 at EOF of its socket")

    def test_reports_a_signal_and_each_child_starts_from_the_warm_state(self):
        self.write("warm.py", "counter = []\n")
        script = self.write("t.py", """\
            import os, signal, sys, warm
            warm.counter.append(1)
            print(len(warm.counter), flush=True)
            if sys.argv[1] == "die":
                os.kill(os.getpid(), signal.SIGTERM)
            """)
        server = Server(self.dir, preload=["warm"])
        try:
            self.assertEqual(server.recv()["type"], "ready")
            for how, want in (("live", {"code": 0}), ("die", {"signal": 15})):
                ident, stdin, stdout, stderr = server.fork(
                    self.dir, script=script, argv=[script, how])
                stdin.close()
                self.assertEqual(server.recv()["type"], "started")
                self.assertEqual(stdout.read(), b"1\n", "the counter starts empty")
                stdout.close()
                stderr.close()
                self.assertEqual(server.recv(), {"type": "exit", "id": ident, **want})
        finally:
            server.close()

    def test_a_failing_preload_makes_it_unusable(self):
        self.write("bad.py", "raise RuntimeError('no import today')\n")
        server = Server(self.dir, preload=["bad"])
        try:
            msg = server.recv()
            self.assertEqual(msg["type"], "unusable")
            self.assertIn("no import today", msg["message"])
        finally:
            server.close()
        self.assertEqual(server.proc.returncode, 1)

    def test_threads_after_preloading_make_it_unusable(self):
        self.write("threaded.py", """\
            import threading, time
            threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
            """)
        server = Server(self.dir, preload=["threaded"])
        try:
            msg = server.recv()
            self.assertEqual(msg["type"], "unusable")
            self.assertIn("threads", msg["message"])
        finally:
            server.close()

    def run_noop(self, server):
        """Sends one request for a script that exits 3; returns the pid the
        server reported."""
        script = self.write("three.py", "import sys\nsys.exit(3)\n")
        ident, stdin, stdout, stderr = server.fork(self.dir, script=script)
        stdin.close()
        started = server.recv()
        self.assertEqual(started["type"], "started")
        self.assertEqual(stdout.read(), b"")
        stdout.close()
        stderr.close()
        self.assertEqual(server.recv(), {"type": "exit", "id": ident, "code": 3})
        return started["pid"]

    def test_attempts_go_to_spares_forked_ahead_and_spares_end_with_the_server(self):
        server = Server(self.dir)
        try:
            self.assertEqual(server.recv()["type"], "ready")
            spares = server.spares(2)
            for pid in spares:
                # Its own group already, and nothing of any attempt.
                self.assertEqual(os.getpgid(pid), pid)
                links = [os.readlink(f"/proc/{pid}/fd/{fd}")
                         for fd in os.listdir(f"/proc/{pid}/fd")]
                self.assertFalse([l for l in links if l.startswith("/memfd:")], links)
            first = self.run_noop(server)
            self.assertIn(first, spares, "the oldest spare ran it")
            # The one used is replaced.
            left = server.spares(2)
            self.assertNotIn(first, left)
            self.assertEqual(len(left & spares), 1)
        finally:
            server.close()
        self.assertEqual(server.proc.returncode, 0)
        # Orphaned at the server's exit, each spare sees EOF and exits.
        deadline = time.monotonic() + TIMEOUT
        while any(Path(f"/proc/{p}").exists() for p in left) and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertFalse([p for p in left if Path(f"/proc/{p}").exists()])

    def test_a_spare_that_died_is_passed_over(self):
        server = Server(self.dir)
        try:
            self.assertEqual(server.recv()["type"], "ready")
            spares = server.spares(2)
            for pid in spares:
                os.kill(pid, 9)
            # Both dead: the request still runs, in a spare forked since or
            # in a child forked for it.
            pid = self.run_noop(server)
            self.assertNotIn(pid, spares)
        finally:
            server.close()

    def test_no_spares_when_orch_fork_spares_is_0(self):
        server = Server(self.dir, spares=0)
        try:
            self.assertEqual(server.recv()["type"], "ready")
            self.assertEqual(server.children(), set())
            self.run_noop(server)
            self.assertEqual(server.children(), set())
        finally:
            server.close()


if __name__ == "__main__":
    unittest.main()
