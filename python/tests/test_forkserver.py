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
        # Spares announced and not named yet, oldest first, and our end of
        # each one's socket; those reported gone.
        self.announced = []
        self.ends = {}
        self.gone = []

    def _next(self):
        """The next message; a spare's announcement is noted with its
        socket, a spare reported gone too."""
        fds = array.array("i")
        data, ancdata, _flags, _addr = self.sock.recvmsg(
            65536, socket.CMSG_SPACE(fds.itemsize))
        for level, kind, raw in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(raw[:len(raw) - (len(raw) % fds.itemsize)])
        msg = json.loads(data.decode("utf-8"))
        if msg.get("type") == "spare":
            assert len(fds) == 1, (msg, fds)
            self.announced.append(msg["pid"])
            self.ends[msg["pid"]] = socket.socket(fileno=fds[0])
        else:
            for fd in fds:
                os.close(fd)
            if msg.get("type") == "gone":
                self.gone.append(msg["pid"])
        return msg

    def recv(self):
        """The next message that is not about spares."""
        while True:
            msg = self._next()
            if msg.get("type") not in ("spare", "gone"):
                return msg

    def spares(self, count):
        """Waits until *count* spares are announced; returns them."""
        while len(self.announced) < count:
            self._next()
        return list(self.announced)

    def take(self, spare, ident):
        """Tells the server that *spare* took attempt *ident*."""
        self.sock.send(json.dumps({"id": ident, "spare": spare}).encode("utf-8"))

    def fork(self, cwd, script=None, call=None, argv=None, env=None, spare=None):
        """Sends one request (to *spare* itself, as the orchestrator does,
        then tells the server, if a spare is given); returns (id, stdin w,
        stdout r, stderr r)."""
        self.next_id += 1
        pipes = [os.pipe() for _ in range(3)]
        marker = os.memfd_create("orch:test:marker")
        child_ends = [pipes[0][0], pipes[1][1], pipes[2][1], marker]
        request = {"id": self.next_id, "script": script, "call": call,
                   "argv": argv or [script or "call"], "cwd": str(cwd),
                   "env": env or {}, "spare": None}
        to = self.sock
        if spare is not None:
            self.announced.remove(spare)
            to = self.ends.pop(spare)
        try:
            to.sendmsg([json.dumps(request).encode("utf-8")],
                       [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                         array.array("i", child_ends))])
        finally:
            for fd in child_ends:
                os.close(fd)
            if spare is not None:
                to.close()
        if spare is not None:
            self.take(spare, self.next_id)
        return (self.next_id, os.fdopen(pipes[0][1], "wb"),
                os.fdopen(pipes[1][0], "rb"), os.fdopen(pipes[2][0], "rb"))

    def close(self):
        self.sock.close()
        for end in self.ends.values():
            end.close()
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

    def run_pid(self, server, spare=None):
        """Runs a script that prints its pid and exits 3 (in *spare*, if
        given); returns the pid it printed."""
        script = self.write("three.py", "import os, sys\nprint(os.getpid())\nsys.exit(3)\n")
        ident, stdin, stdout, stderr = server.fork(self.dir, script=script, spare=spare)
        stdin.close()
        if spare is None:
            started = server.recv()
            self.assertEqual(started["type"], "started")
        pid = int(stdout.read())
        stdout.close()
        stderr.close()
        self.assertEqual(server.recv(), {"type": "exit", "id": ident, "code": 3})
        if spare is None:
            self.assertEqual(started["pid"], pid)
        return pid

    def test_a_request_sent_to_a_spare_runs_in_it_unanswered_and_spares_end_with_the_server(self):
        server = Server(self.dir, spares=2)
        try:
            self.assertEqual(server.recv()["type"], "ready")
            spares = server.spares(2)
            for pid in spares:
                # Its own group already, and nothing of any attempt.
                self.assertEqual(os.getpgid(pid), pid)
                links = [os.readlink(f"/proc/{pid}/fd/{fd}")
                         for fd in os.listdir(f"/proc/{pid}/fd")]
                self.assertFalse([l for l in links if l.startswith("/memfd:")], links)
            self.assertEqual(self.run_pid(server, spare=spares[0]), spares[0])
            # It is replaced; a request that names none is forked for.
            replaced = server.spares(2)
            self.assertNotIn(spares[0], replaced)
            fresh = self.run_pid(server)
            self.assertNotIn(fresh, spares + replaced)
        finally:
            server.close()
        self.assertEqual(server.proc.returncode, 0)
        # Their sockets closed with the server's, each spare sees EOF and
        # exits.
        deadline = time.monotonic() + TIMEOUT
        alive = lambda: [p for p in replaced if Path(f"/proc/{p}").exists()]
        while alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertEqual(alive(), [])

    def test_a_spare_that_died_is_passed_over_and_kept_until_named(self):
        server = Server(self.dir, spares=2)
        try:
            self.assertEqual(server.recv()["type"], "ready")
            dead = server.spares(1)[0]
            os.kill(dead, 9)
            # Replaced and reported gone, but not reaped: its pid cannot be
            # handed out again.
            self.assertEqual(len([p for p in server.spares(3) if p != dead]), 2)
            while not server.gone:
                server.spares(len(server.announced) + 1)
            self.assertEqual(server.gone, [dead])
            self.assertTrue(Path(f"/proc/{dead}").exists(), "a zombie")
            # A request sent to it fails at once (nobody reads its socket).
            with self.assertRaises((BrokenPipeError, ConnectionResetError,
                                    ConnectionRefusedError)):
                server.fork(self.dir, script="x.py", spare=dead)
            # Had it died after it took an attempt, that attempt ends as
            # the spare did.
            server.take(dead, 99)
            self.assertEqual(server.recv(), {"type": "exit", "id": 99, "signal": 9})
        finally:
            server.close()

    def test_a_spare_whose_socket_is_dropped_exits(self):
        server = Server(self.dir, spares=1)
        try:
            self.assertEqual(server.recv()["type"], "ready")
            pid = server.spares(1)[0]
            server.announced.remove(pid)
            server.ends.pop(pid).close()
            # The orchestrator dropped it (or died): it exits, is reported
            # gone and replaced.
            while pid not in server.gone:
                server.spares(len(server.announced) + 1)
        finally:
            server.close()

    def test_spares_that_die_at_once_are_not_forked_in_a_loop(self):
        server = Server(self.dir, spares=1)
        try:
            self.assertEqual(server.recv()["type"], "ready")
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline:
                server.spares(len(server.announced) + 1)
                pid = server.announced.pop()
                server.ends.pop(pid).close()
            # One every DIED_BACKOFF (0.1 s) at most, give or take one.
            self.assertLessEqual(len(server.gone), 7, server.gone)
        finally:
            server.close()

    def test_two_spares_by_default_and_none_when_orch_fork_spares_is_0(self):
        server = Server(self.dir)
        try:
            self.assertEqual(server.recv()["type"], "ready")
            self.assertEqual(len(server.spares(2)), 2)
        finally:
            server.close()
        self.no_spares(Server(self.dir, spares=0))

    def no_spares(self, server):
        try:
            self.assertEqual(server.recv()["type"], "ready")
            self.run_pid(server)
            self.run_pid(server)
            self.assertEqual(server.announced, [])
        finally:
            server.close()


if __name__ == "__main__":
    unittest.main()
