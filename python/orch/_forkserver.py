"""The warm fork server: one per run, started by the orchestrator.

It imports the helper and the modules the workflow asks to preload, then
forks one child per Python task attempt.  Each child is its own process,
in its own process group, with the stdin/stdout/stderr the orchestrator
created for the attempt; it runs the script as ``__main__`` (or the
``module:function`` call) and exits with the code a fresh interpreter would
have exited with.  The server reaps its children and reports how each one
ended, since the orchestrator is not their parent.

The control channel is a ``SOCK_SEQPACKET`` Unix socket on file descriptor
3; every packet is one JSON object.

Orchestrator -> server: ``{"id": n, "script": path | null, "call":
"mod:fn" | null, "argv": [...], "cwd": dir, "env": {...}, "spare": null}``
with four file descriptors attached (SCM_RIGHTS): the attempt's stdin,
stdout and stderr, and a marker (a memfd named after the run and node,
which the child keeps open so that ``orch resume`` can tell the process is
this attempt); or ``{"id": n, "spare": p}`` with none: spare *p* took
attempt *n* (below).

Server -> orchestrator: ``{"type": "ready", "pid": p}`` once, or
``{"type": "unusable", "message": ...}`` before exiting (a preload failed,
or threads run after preloading, which makes fork unsafe); ``{"type":
"spare", "pid": p}`` for each spare (below), with the orchestrator's end of
the spare's socket attached, and ``{"type": "gone", "pid": p}`` for one
that died before any request named it; per request for a fork
``{"type": "started", "id": n, "pid": p}`` or ``{"type": "failed", "id":
n, "message": ...}``; and later, for every attempt, ``{"type": "exit",
"id": n, "code": c}`` or ``{"type": "exit", "id": n, "signal": s}``.

Spares: forking a process the size of a warm interpreter takes the
server a millisecond or more, and an orchestrator that waited for it
would be held up as long.  So the server forks ``ORCH_FORK_SPARES``
children ahead of time (``SPARES`` by default), as soon as it has nothing
else to do, and announces each one's pid together with the orchestrator's
end of a socket to it (the server keeps none).  A spare puts itself in its
own process group, resets its signals and waits on that socket.  The
orchestrator sends an attempt's request (packet and file descriptors, as
it would to the server) straight to the oldest spare, which becomes the
attempt, and then tells the server ``{"id": n, "spare": p}``, which is
not answered: the server, the spare's parent, reports its end as any
attempt's.  Neither waits for the other, and the server forks the next
spare while the attempt runs.  A request for a fork (the orchestrator knew
of no spare) is forked for at once and answered ``started``, as before
there were spares.  A spare holds nothing of any attempt until it receives
one (no marker, no pipes), and exits when nobody holds the other end of
its socket (the orchestrator dropped it or died).  A spare that dies
before it is named is replaced (no sooner than ``DIED_BACKOFF`` later)
and reported gone, but not reaped (its
pid, which the orchestrator may hold, is not reused until the server
exits): an attempt it took before the server heard ends as the spare
did.

The server exits when the control channel reaches EOF: when the
orchestrator closes it at the end of the run, or dies.  Children that still
run are left alone, as fresh interpreters would be; spares exit.
"""

import array
import builtins
import importlib
import importlib.machinery
import io
import json
import os
import select
import signal
import socket
import sys
import time
import traceback
import types

CONTROL_FD = 3
MAX_PACKET = 1 << 20
FDS_PER_REQUEST = 4
# Children forked ahead of requests (see the module's docstring);
# ``ORCH_FORK_SPARES=N`` in the orchestrator's environment keeps N instead.
SPARES = 2
# Seconds without refills after a spare died before any request named it:
# spares that die at once (killed as they come) are not forked in a loop.
DIED_BACKOFF = 0.1


def _send(sock, obj):
    """Sends one message; at the orchestrator's end of the socket (it
    closed it or died), exits quietly as at EOF."""
    try:
        sock.send(json.dumps(obj, separators=(",", ":")).encode("utf-8"))
    except (BrokenPipeError, ConnectionResetError):
        os._exit(0)


def _send_fd(sock, obj, fd):
    """Sends one message with file descriptor *fd* attached; at the
    orchestrator's end of the socket, exits quietly as at EOF."""
    try:
        sock.sendmsg([json.dumps(obj, separators=(",", ":")).encode("utf-8")],
                     [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
    except (BrokenPipeError, ConnectionResetError):
        os._exit(0)


def _recv(sock):
    """One request packet, its file descriptors and its bytes; (None, [],
    b"") at EOF."""
    fds = array.array("i")
    msg, ancdata, _flags, _addr = sock.recvmsg(
        MAX_PACKET, socket.CMSG_SPACE(FDS_PER_REQUEST * fds.itemsize))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - (len(data) % fds.itemsize)])
    if not msg:
        for fd in fds:
            os.close(fd)
        return None, [], b""
    return json.loads(msg.decode("utf-8")), list(fds), msg


def _spares(setting):
    """How many spares to keep: ``ORCH_FORK_SPARES`` when it is a whole
    number, else ``SPARES``."""
    try:
        return max(0, int(setting))
    except ValueError:
        return SPARES


def _thread_count():
    """Threads of this process, as the kernel sees them (C threads too)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        import threading
        return threading.active_count()


def main():
    """Preload, report readiness, then serve fork requests until EOF."""
    sock = socket.socket(fileno=CONTROL_FD)
    sock.set_inheritable(False)
    preload = json.loads(os.environ.pop("ORCH_FORK_PRELOAD", "[]"))
    spares = _spares(os.environ.pop("ORCH_FORK_SPARES", ""))
    try:
        import orch  # noqa: F401  (warm: every task imports it)
        import orch.__main__  # noqa: F401  (runs module:function tasks)
        for name in preload:
            importlib.import_module(name)
    except BaseException:
        _send(sock, {"type": "unusable",
                     "message": "preloading failed:\n" + traceback.format_exc()})
        return 1
    threads = _thread_count()
    if threads > 1:
        _send(sock, {"type": "unusable",
                     "message": f"{threads} threads run after preloading "
                                f"({', '.join(preload) or 'no modules'}); forking a "
                                "process with threads is unsafe"})
        return 1
    stdio = [(s.encoding, s.errors) if s is not None else ("utf-8", "strict")
             for s in (sys.stdin, sys.stdout, sys.stderr)]
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda _sig, _frame: None)
    _send(sock, {"type": "ready", "pid": os.getpid()})

    server = _Server(sock, stdio, (wake_r, wake_w), spares)
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    while True:
        # Short of spares: fork one as soon as nothing else is to be done.
        # No attempt waits for it: a request goes to a spare without the
        # server, and one for a fork is served before the next spare.
        short = server.spares_wanted()
        wait = None
        if short:
            left = server.refill_at - time.monotonic()
            wait = int(left * 1000) + 1 if left > 0 else 0
        events = dict(poller.poll(wait))
        if wake_r in events:
            try:
                while os.read(wake_r, 512):
                    pass
            except BlockingIOError:
                pass
        server.reap()
        if sock.fileno() in events:
            if not server.serve():
                return 0
        elif short and not events and time.monotonic() >= server.refill_at:
            server.fork_spare()


class _Server:
    """The server's state: its attempts' children, its spares."""

    def __init__(self, sock, stdio, wake, spares):
        self.sock = sock
        self.stdio = stdio
        self.wake = wake
        self.want = spares
        # pid -> request id of every attempt's child not yet reaped.
        self.children = {}
        # Pids of the announced spares no request named yet.
        self.spares = set()
        # Announced spares that died before a request named them: left
        # unreaped until one does.
        self.dead = set()
        # A spare could not be forked: from then on, forks per request.
        self.no_spares = False
        # No refill before this time.monotonic() (see DIED_BACKOFF).
        self.refill_at = 0.0

    def spares_wanted(self):
        return not self.no_spares and len(self.spares) < self.want

    def _forked(self):
        """In a new child: drops what belongs to the server (a spare must
        see EOF once the server is gone, so no other process may keep the
        server's end of its socket)."""
        signal.set_wakeup_fd(-1)
        self.sock.close()
        for fd in self.wake:
            os.close(fd)
        _detach()

    def fork_spare(self):
        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        except OSError:
            self.no_spares = True
            return
        try:
            pid = os.fork()
        except OSError:
            ours.close()
            theirs.close()
            self.no_spares = True
            return
        if pid == 0:
            try:
                self._forked()
                ours.close()
            except BaseException:
                os._exit(1)
            _spare(theirs, self.stdio)
        theirs.close()
        # Its group exists before its pid is announced.
        try:
            os.setpgid(pid, pid)
        except OSError:
            pass
        self.spares.add(pid)
        try:
            _send_fd(self.sock, {"type": "spare", "pid": pid}, ours.fileno())
        finally:
            # The orchestrator's copy is the only one: once it is gone
            # (dropped, or the orchestrator died), the spare sees EOF.
            ours.close()

    def serve(self):
        """Serves one request; False at EOF."""
        request, fds, _raw = _recv(self.sock)
        if request is None:
            return False
        spare = request.get("spare")
        if spare is not None:
            for fd in fds:
                os.close(fd)
            self._taken(spare, request["id"])
            return True
        if len(fds) != FDS_PER_REQUEST:
            for fd in fds:
                os.close(fd)
            _send(self.sock, {"type": "failed", "id": request.get("id"),
                              "message": f"expected {FDS_PER_REQUEST} file descriptors, got {len(fds)}"})
            return True
        # The gate: the child runs nothing of the task before the server
        # told the orchestrator its pid, so a task that stops or kills the
        # server cannot leave an attempt running that nobody knows of.
        try:
            gate_r, gate_w = os.pipe()
        except OSError as e:
            for fd in fds:
                os.close(fd)
            _send(self.sock, {"type": "failed", "id": request["id"],
                              "message": f"pipe failed: {e}"})
            return True
        try:
            pid = os.fork()
        except OSError as e:
            for fd in fds + [gate_r, gate_w]:
                os.close(fd)
            _send(self.sock, {"type": "failed", "id": request["id"],
                              "message": f"fork failed: {e}"})
            return True
        if pid == 0:
            # The child never returns into the server loop.
            try:
                os.close(gate_w)
                opened = os.read(gate_r, 1)
                os.close(gate_r)
                if not opened:
                    # The server died before it announced this child.
                    os._exit(1)
                self._forked()
            except BaseException:
                traceback.print_exc()
                os._exit(1)
            _child(request, fds, self.stdio)
        os.close(gate_r)
        # The group exists before anyone is told the pid (the child sets it
        # too; whichever runs first wins, the other's call is harmless).
        try:
            os.setpgid(pid, pid)
        except OSError:
            pass
        for fd in fds:
            os.close(fd)
        self.children[pid] = request["id"]
        try:
            _send(self.sock, {"type": "started", "id": request["id"], "pid": pid})
        finally:
            os.write(gate_w, b"g")
            os.close(gate_w)
        return True

    def _taken(self, pid, ident):
        """Spare *pid* took attempt *ident* (the orchestrator gave it the
        request): its end is the attempt's end from now on."""
        if pid in self.spares:
            self.spares.discard(pid)
        elif pid not in self.dead:
            # Cannot happen: the orchestrator names each announced spare once.
            _send(self.sock, {"type": "exit", "id": ident, "code": 1})
            return
        self.dead.discard(pid)
        self.children[pid] = ident
        # A spare that is dead already sends no SIGCHLD any more.
        self.reap()

    def reap(self):
        for pid in list(self.children):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                # Not ours to wait for (cannot happen): ended, how unknown.
                done, status = pid, None
            if done == 0:
                continue
            ident = self.children.pop(pid)
            if status is None:
                _send(self.sock, {"type": "exit", "id": ident})
            elif os.WIFSIGNALED(status):
                _send(self.sock, {"type": "exit", "id": ident, "signal": os.WTERMSIG(status)})
            else:
                _send(self.sock, {"type": "exit", "id": ident, "code": os.WEXITSTATUS(status)})
        for pid in list(self.spares):
            try:
                died = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                died = True
            if died:
                # Replaced (see spares_wanted); reaped once it is named, if
                # the orchestrator named it before it heard it is gone.
                self.spares.discard(pid)
                self.dead.add(pid)
                self.refill_at = time.monotonic() + DIED_BACKOFF
                _send(self.sock, {"type": "gone", "pid": pid})


def _detach():
    """A new child's first steps: its own process group, and the signal
    dispositions of a fresh interpreter (SIGINT stays the default until
    the attempt runs, as in an interpreter that has not started yet)."""
    try:
        os.setpgid(0, 0)
    except OSError:
        pass  # the server sets it too
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)


def _spare(sock, stdio):
    """A spare: waits for its attempt on *sock*, then becomes it; exits
    when the server is gone. Never returns."""
    try:
        request, fds, _raw = _recv(sock)
        sock.close()
    except BaseException:
        os._exit(1)
    if request is None:
        os._exit(0)
    _child(request, fds, stdio)


def _child(request, fds, stdio):
    """Become the attempt's process; never returns."""
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        stdin, stdout, stderr, marker = fds
        for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
            os.dup2(fd, target)
        for fd in (stdin, stdout, stderr):
            os.close(fd)
        os.set_inheritable(marker, False)
        # What `python -u` gives a fresh interpreter.
        (in_enc, in_err), (out_enc, out_err), (err_enc, err_err) = stdio
        sys.stdin = sys.__stdin__ = io.TextIOWrapper(
            io.BufferedReader(io.FileIO(0, "r", closefd=False)),
            encoding=in_enc, errors=in_err)
        sys.stdout = sys.__stdout__ = io.TextIOWrapper(
            io.FileIO(1, "w", closefd=False), encoding=out_enc, errors=out_err,
            write_through=True)
        sys.stderr = sys.__stderr__ = io.TextIOWrapper(
            io.FileIO(2, "w", closefd=False), encoding=err_enc, errors=err_err,
            write_through=True)
        os.chdir(request["cwd"])
        for key, value in request["env"].items():
            os.environ[key] = value
        sys.argv = list(request["argv"])
    except BaseException:
        traceback.print_exc()
        os._exit(1)
    try:
        code = _run(request)
    finally:
        try:
            _finish()
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except BaseException:
                    pass
            os._exit(code)


def _run(request):
    """Runs the task like a fresh interpreter would; returns the exit code."""
    try:
        if request.get("script"):
            _run_script(request["script"])
            return 0
        import orch.__main__ as call
        sys.modules["__main__"] = call
        sys.path[0] = os.getcwd()
        return call.main(["call", request["call"]])
    except SystemExit as e:
        return _exit_code(e.code)
    except KeyboardInterrupt:
        # Like a fresh interpreter: die by SIGINT.
        _finish()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        return 130
    except BaseException as e:
        tb = e.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
            tb = tb.tb_next
        # The hook prints the exception's own traceback: trim that.
        sys.excepthook(type(e), e.with_traceback(tb), tb)
        return 1


def _run_script(path):
    with io.open_code(path) as f:
        source = f.read()
    sys.path[0] = os.path.dirname(os.path.realpath(path))
    main = types.ModuleType("__main__")
    main.__dict__.update({
        "__file__": path, "__builtins__": builtins, "__cached__": None,
        "__loader__": importlib.machinery.SourceFileLoader("__main__", path),
    })
    sys.modules["__main__"] = main
    code = compile(source, path, "exec", dont_inherit=True)
    exec(code, main.__dict__)


def _exit_code(code):
    """The exit status `sys.exit(code)` gives a fresh interpreter."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        print(code, file=sys.stderr)
    except BaseException:
        pass
    return 1


def _finish():
    """What a fresh interpreter does at exit: join threads, run atexit."""
    import threading
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        try:
            shutdown()
        except BaseException:
            traceback.print_exc()
    import atexit
    atexit._run_exitfuncs()


if __name__ == "__main__":
    sys.exit(main())
