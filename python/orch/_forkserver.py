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
"mod:fn" | null, "argv": [...], "cwd": dir, "env": {...}}`` with four file
descriptors attached (SCM_RIGHTS): the attempt's stdin, stdout and stderr,
and a marker (a memfd named after the run and node, which the child keeps
open so that ``orch resume`` can tell the process is this attempt).

Server -> orchestrator: ``{"type": "ready", "pid": p}`` once, or
``{"type": "unusable", "message": ...}`` before exiting (a preload failed,
or threads run after preloading, which makes fork unsafe); then per
request ``{"type": "started", "id": n, "pid": p}`` or ``{"type": "failed",
"id": n, "message": ...}``, and later ``{"type": "exit", "id": n, "code":
c}`` or ``{"type": "exit", "id": n, "signal": s}``.

The server exits when the control channel reaches EOF: when the
orchestrator closes it at the end of the run, or dies.  Children that still
run are left alone, as fresh interpreters would be.
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
import traceback
import types

CONTROL_FD = 3
MAX_PACKET = 1 << 20
FDS_PER_REQUEST = 4


def _send(sock, obj):
    sock.send(json.dumps(obj, separators=(",", ":")).encode("utf-8"))


def _recv(sock):
    """One request packet and its file descriptors; (None, []) at EOF."""
    fds = array.array("i")
    msg, ancdata, _flags, _addr = sock.recvmsg(
        MAX_PACKET, socket.CMSG_SPACE(FDS_PER_REQUEST * fds.itemsize))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - (len(data) % fds.itemsize)])
    if not msg:
        for fd in fds:
            os.close(fd)
        return None, []
    return json.loads(msg.decode("utf-8")), list(fds)


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

    children = {}
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    while True:
        events = dict(poller.poll())
        if wake_r in events:
            try:
                while os.read(wake_r, 512):
                    pass
            except BlockingIOError:
                pass
        _reap(sock, children)
        if sock.fileno() not in events:
            continue
        request, fds = _recv(sock)
        if request is None:
            return 0
        if len(fds) != FDS_PER_REQUEST:
            for fd in fds:
                os.close(fd)
            _send(sock, {"type": "failed", "id": request.get("id"),
                         "message": f"expected {FDS_PER_REQUEST} file descriptors, got {len(fds)}"})
            continue
        try:
            pid = os.fork()
        except OSError as e:
            for fd in fds:
                os.close(fd)
            _send(sock, {"type": "failed", "id": request["id"], "message": f"fork failed: {e}"})
            continue
        if pid == 0:
            # The child never returns into the server loop.
            signal.set_wakeup_fd(-1)
            sock.close()
            os.close(wake_r)
            os.close(wake_w)
            _child(request, fds, stdio)
        # The group exists before anyone is told the pid (the child sets it
        # too; whichever runs first wins, the other's call is harmless).
        try:
            os.setpgid(pid, pid)
        except OSError:
            pass
        for fd in fds:
            os.close(fd)
        children[pid] = request["id"]
        _send(sock, {"type": "started", "id": request["id"], "pid": pid})


def _reap(sock, children):
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        ident = children.pop(pid, None)
        if ident is None:
            continue
        if os.WIFSIGNALED(status):
            _send(sock, {"type": "exit", "id": ident, "signal": os.WTERMSIG(status)})
        else:
            _send(sock, {"type": "exit", "id": ident, "code": os.WEXITSTATUS(status)})


def _child(request, fds, stdio):
    """Become the attempt's process; never returns."""
    code = 1
    try:
        os.setpgid(0, 0)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                    signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM):
            signal.signal(sig, signal.SIG_DFL)
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
