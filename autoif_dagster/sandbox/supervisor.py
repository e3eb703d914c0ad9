"""The sandbox supervisor: runs LLM-written `evaluate(response)` functions on strings.

    python -m autoif_dagster.sandbox.supervisor --in-fd N --out-fd M [--memory-mb 512]
        [--max-procs N] [--preload nltk,langdetect]
    python /path/to/supervisor.py --in-fd N --out-fd M            (same, as a plain script)

Stdlib only, and imports nothing from the package but `protocol`: the same file must run in
a container that holds only a Python interpreter.

It reads requests from --in-fd and writes responses to --out-fd (see protocol.py), never to
stdout. For each request it compiles the source once, then forks a child from this warm
process. The child moves into its own process group, rlimits and a scratch directory, runs
the module, and reports one verdict per input over a private pipe as soon as it has it.
Once the last verdict is in, the child is killed and the reply sent; reaping the child and
clearing up after it follow, while the reply is on its way (but before the next request).

The wall-clock limit is enforced from outside: a signal handler inside the child could be
disabled by the verifier (`signal.alarm(0)`) and cannot interrupt C code (a catastrophic
regex, `10**10**10`). So when an input's deadline passes, the parent SIGKILLs the child's
whole process group, records TIMEOUT, and forks a fresh child for the remaining inputs.
A child that dies without answering gives CRASH for the input it was on.

Run as PID 1 of its own PID namespace (the Docker and host backends), it is out of the
verifiers' reach: the kernel drops signals sent to a namespace's init from inside it, so
`os.kill(os.getppid(), 9)` does nothing, and after each child it SIGKILLs every other
process in the namespace, which catches grandchildren that escaped the process group with
setsid(). Known gap of the local backend (not PID 1): the child runs as the supervisor's
user, so a verifier can kill the supervisor itself; the client then restarts the supervisor
and re-sends the request.

The supervisor makes itself non-dumpable, so that a child running as the same user cannot
ptrace it or open /proc/<its pid>/fd/* to write forged responses on its output.
"""

import argparse
import builtins
import gc
import importlib
import json
import math
import os
import resource
import select
import shutil
import signal
import sys
import tempfile
import time
from types import CodeType

if __package__:
    from . import protocol
else:  # run as a plain script: protocol.py sits next to this file
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import protocol

Verdict = protocol.Verdict
_exit = os._exit

MIB = 1024 * 1024
DETAIL_CHARS = 200  # verdict details are diagnostics, not payloads
RESULT_FD = 3  # where the child keeps its end of the result pipe
MAX_RECORD_BYTES = 64 * 1024  # a longer "record" means the verifier scribbled on the pipe
READ_PACING_S = 0.002  # see _RecordReader
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
PR_SET_DUMPABLE = 4
# Imported once in the warm parent so that each child finds them in sys.modules instead of
# importing them again: the stdlib modules verifiers use most. --preload adds packages.
PRELOAD = ("re", "json", "string", "math", "collections", "itertools", "unicodedata", "datetime", "random")

try:  # loaded once here so that each child only makes one call
    import ctypes

    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (ImportError, OSError, AttributeError):  # no ctypes or not Linux: rely on RLIMIT_CPU
    _prctl = None


# ---------------------------------------------------------------- the parent's side

# What the child writes on the result pipe, one record a line: the two commonest as one
# byte (parsing JSON for every verdict cost the parent more than most verifiers take),
# the rest as JSON: ["verdict", kind, detail] for an input, ["module", kind, detail] when
# the module cannot be evaluated at all.
LOADED_RECORD = b"l"  # the module ran and defines evaluate()
PASS_RECORD = b"p"
FAIL_RECORD = b"f"
_PASS = Verdict(protocol.PASS)
_FAIL = Verdict(protocol.FAIL)
_FAST_RECORDS = {PASS_RECORD: _PASS, FAIL_RECORD: _FAIL}


def judge(source: str, inputs: list[str], timeout_s: float, memory_mb: int,
          max_procs: int | None = None, deferred: list | None = None) -> list[Verdict]:
    """One verdict per input, in order.

    The last child is killed but, if `deferred` is a list, reaping it and clearing up after
    it (see _clean_up) is left to the caller: appended there as a callable, to be called
    after the reply went out and before the next verifier runs.
    """
    try:
        code = compile(source, "<verifier>", "exec", dont_inherit=True)
    except Exception as exc:  # SyntaxError, ValueError (NUL bytes), RecursionError...
        return [Verdict(protocol.COMPILE_ERROR, _describe_exception(exc))] * len(inputs)
    verdicts: list[Verdict] = []
    while len(verdicts) < len(inputs):
        verdicts += _run_child(code, inputs, len(verdicts), timeout_s, memory_mb, max_procs, deferred)
    return verdicts


def _run_child(code: CodeType, inputs: list[str], start: int, timeout_s: float,
               memory_mb: int, max_procs: int | None, deferred: list | None) -> list[Verdict]:
    """Verdicts for inputs[start:] from one child: all of them, or those it gave before it
    timed out or died followed by a TIMEOUT/CRASH verdict for the input it was on."""
    count = len(inputs) - start
    scratch = tempfile.mkdtemp(prefix="verifier-")
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child never returns into the supervisor's loop
        try:
            os.close(read_fd)
            _child(code, inputs[start:], write_fd, scratch, memory_mb, timeout_s, max_procs)
        except BaseException:
            _exit(70)
        _exit(0)  # bound at import: the verifier may have replaced os._exit

    os.close(write_fd)
    try:
        # The child does this too; whichever runs first closes the race with killpg below.
        os.setpgid(pid, pid)
    except OSError:
        pass
    ending: tuple[str, str] | None = (protocol.CRASH, "")
    try:
        verdicts, loaded, ending = _collect(read_fd, count, timeout_s)
    finally:
        os.close(read_fd)
        _kill(pid)
        if ending is None and deferred is not None:  # all answered: reap it later
            deferred.append(lambda: _clean_up(pid, scratch))
        else:
            status = _clean_up(pid, scratch)
    if ending is None:
        return verdicts
    kind, note = ending
    if kind == protocol.TIMEOUT:
        detail = f"no answer within {timeout_s:g} s"
    else:
        detail = _describe_status(status) + (f" ({note})" if note else "")
    if not loaded:  # the module's top level hung or died: every input would repeat that
        return [Verdict(kind, f"top-level code: {detail}")] * count
    return verdicts + [Verdict(kind, detail)]


def _collect(fd: int, count: int, timeout_s: float) -> tuple[list[Verdict], bool, tuple[str, str] | None]:
    """Read the child's records until `count` verdicts, a missed deadline, or its death.

    Returns (verdicts, whether the module loaded, None or (TIMEOUT | CRASH, note)).
    Each input has timeout_s from the previous record (or the start) to be answered.
    """
    reader = _RecordReader(fd)
    verdicts: list[Verdict] = []
    loaded = False
    fast = _FAST_RECORDS
    while len(verdicts) < count:
        try:
            lines = reader.lines(deadline=time.monotonic() + timeout_s)
        except TimeoutError:
            return verdicts, loaded, (protocol.TIMEOUT, "")
        except EOFError as exc:
            return verdicts, loaded, (protocol.CRASH, str(exc))
        for line in lines:
            if len(verdicts) == count:  # anything more the verifier wrote itself
                break
            verdict = fast.get(line)
            if verdict is not None:
                verdicts.append(verdict)
            elif line == LOADED_RECORD:
                loaded = True
            else:
                try:
                    tag, *rest = json.loads(line)
                    if tag not in ("verdict", "module"):
                        raise ValueError(tag)
                    verdict = Verdict.from_json(rest)  # validates the kind
                except (ValueError, TypeError, RecursionError):
                    return verdicts, loaded, (protocol.CRASH, "garbage on the result pipe")
                if tag == "module":
                    return [verdict] * count, True, None
                verdicts.append(verdict)
    return verdicts, loaded, None


class _RecordReader:
    """Newline-separated records from the child, awaited against a deadline.

    The child writes each verdict as soon as it has it, so that a timeout or crash is pinned
    on the right input. We read them in batches, at most every READ_PACING_S: waking up for
    every record would cost a context switch per verdict, more than most verifiers take.
    The pause ends early when the child closes the pipe (after its last verdict, or dying).
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.partial = b""  # the start of a record still being written
        self.last_read = 0.0
        self.poller = select.poll()
        self.poller.register(fd, select.POLLIN)
        self.hangup = select.poll()  # eventmask 0: only POLLHUP (all writers gone) wakes it
        self.hangup.register(fd, 0)

    def lines(self, deadline: float) -> list[bytes]:
        """At least one complete record; TimeoutError past the deadline, EOFError if the
        child is gone."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            if not self.poller.poll(math.ceil(remaining * 1000)):
                continue
            pause = self.last_read + READ_PACING_S - time.monotonic()
            if pause > 0:
                self.hangup.poll(math.ceil(pause * 1000))
            chunk = os.read(self.fd, 1024 * 1024)
            self.last_read = time.monotonic()
            if not chunk:
                raise EOFError("")  # the pipe closed: the child exited or was killed
            *complete, self.partial = (self.partial + chunk).split(b"\n")
            if len(self.partial) > MAX_RECORD_BYTES:
                raise EOFError("garbage on the result pipe")
            if complete:
                return complete


def _kill(pid: int) -> None:
    """SIGKILL the child's process group (taking any grandchildren or threads with it).
    Before it is reaped, its pid cannot be reused."""
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _clean_up(pid: int, scratch: str) -> int:
    """Reap the (killed) child, clear up what it left behind; its wait status."""
    status = os.waitpid(pid, 0)[1]
    _clear_namespace()
    shutil.rmtree(scratch, ignore_errors=True)
    return status


def _clear_namespace() -> None:
    """Reap orphaned grandchildren. As PID 1 (of a container or a PID namespace, whose
    temporary directories are private tmpfs), first kill every other process in the
    namespace, so that whatever the child left running, even after setsid(), is gone, and
    empty the temporary directories: the next verifier finds no trace of this one."""
    as_init = os.getpid() == 1
    if as_init:
        try:
            os.kill(-1, signal.SIGKILL)  # all processes we may signal, except ourselves
        except ProcessLookupError:  # nobody left
            pass
    try:
        while os.waitpid(-1, 0 if as_init else os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass
    if as_init:
        for directory in (tempfile.gettempdir(), "/dev/shm"):
            for entry in _listdir(directory):
                path = os.path.join(directory, entry)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    try:
                        os.unlink(path)
                    except OSError:
                        pass


def _listdir(directory: str) -> list[str]:
    try:
        return os.listdir(directory)
    except OSError:
        return []


def _describe_status(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


# ---------------------------------------------------------------- the child's side


def _child(code: CodeType, inputs: list[str], result_fd: int, scratch: str, memory_mb: int,
           timeout_s: float, max_procs: int | None) -> None:
    # Bind what reporting needs before the verifier runs: it may rebind os.write or json.dumps.
    write, close, dumps = os.write, os.close, json.dumps
    passed, failed = PASS_RECORD + b"\n", FAIL_RECORD + b"\n"

    def send(*record: str) -> None:
        data = memoryview((dumps(record) + "\n").encode())
        while data:
            data = data[write(RESULT_FD, data):]

    _confine(result_fd, scratch, memory_mb, cpu_s=timeout_s * (len(inputs) + 1), max_procs=max_procs)
    # Not "__main__": release verifiers often carry an `if __name__ == "__main__":` self-test.
    namespace = {"__name__": "verifier", "__builtins__": builtins}
    try:
        exec(code, namespace)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt included
        send("module", protocol.EXCEPTION, "top-level code: " + _describe_exception(exc))
        return
    evaluate = namespace.get("evaluate")
    if not callable(evaluate):
        send("module", protocol.NO_EVALUATE, "no callable evaluate() defined")
        return
    write(RESULT_FD, LOADED_RECORD + b"\n")
    for text in inputs:
        try:
            result = evaluate(text)
        except BaseException as exc:
            send("verdict", protocol.EXCEPTION, _describe_exception(exc))
            continue
        if type(result) is bool:  # a pipe write this short is atomic
            write(RESULT_FD, passed if result else failed)
        else:
            send("verdict", *_verdict_of(result))
    # The parent stops waiting for more records when the pipe closes (grandchildren holding
    # it open only delay that).
    close(RESULT_FD)


def _confine(result_fd: int, scratch: str, memory_mb: int, cpu_s: float, max_procs: int | None) -> None:
    """Own process group, resource limits, no inherited descriptors, /dev/null stdio, scratch cwd."""
    os.setpgrp()
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # don't outlive a killed supervisor
    # RLIMIT_CPU is only a backstop (the parent enforces wall-clock time). RLIMIT_NPROC counts
    # all processes of the user, so it is only set (--max-procs) where that user is the
    # sandbox's own; a container's pids limit does the job there.
    limits = [
        (resource.RLIMIT_AS, memory_mb * MIB),
        (resource.RLIMIT_CPU, math.ceil(cpu_s) + 5),
        (resource.RLIMIT_FSIZE, MIB),  # Python ignores SIGXFSZ: big writes raise OSError
        (resource.RLIMIT_CORE, 0),
        # Runaway recursion then overflows a small stack quickly (a crash) instead of
        # paging through an unlimited one until it times out.
        (resource.RLIMIT_STACK, 16 * MIB),
    ]
    if max_procs is not None:
        limits.append((resource.RLIMIT_NPROC, max_procs))
    for limit, value in limits:
        _, hard = resource.getrlimit(limit)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(limit, (value, value))

    os.dup2(result_fd, RESULT_FD)
    # Close everything else, the supervisor's protocol pipes above all.
    os.closerange(RESULT_FD + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    if devnull > 2:
        os.close(devnull)
    os.chdir(scratch)


def _verdict_of(result: object) -> tuple[str, str]:
    # Compare types, never values: an object's __bool__ or __eq__ may raise or lie.
    if type(result) is bool:
        return (protocol.PASS if result else protocol.FAIL), ""
    cls = type(result)
    if cls.__module__ == "numpy" and cls.__name__ in ("bool", "bool_"):  # numpy 2 / numpy 1
        return (protocol.PASS if bool(result) else protocol.FAIL), ""
    return protocol.NON_BOOL, f"returned {_truncate(cls.__name__)}"


def _describe_exception(exc: BaseException) -> str:
    name = type(exc).__name__
    try:
        message = str(exc)
    except BaseException:  # an exception whose __str__ raises
        message = "<unprintable>"
    return _truncate(f"{name}: {message}" if message else name)


def _truncate(text: str) -> str:
    return text if len(text) <= DETAIL_CHARS else text[: DETAIL_CHARS - 3] + "..."


# ---------------------------------------------------------------- the request loop


def _warm_up(modules: list[str]) -> None:
    """Import what verifiers commonly import, once, in this trusted process; a package that
    is not installed is skipped (a verifier importing it gets an exception verdict)."""
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if name == "langdetect":  # it loads its language profiles on the first call
            try:
                module.detect("warm up the language profiles")
            except Exception:
                pass
    # Move everything imported so far out of the collector's reach: children then don't
    # touch (and copy) these pages when they collect garbage.
    gc.freeze()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--in-fd", type=int, required=True, help="read requests from this fd")
    parser.add_argument("--out-fd", type=int, required=True, help="write responses to this fd")
    parser.add_argument("--memory-mb", type=int, default=512, help="address-space cap per child")
    parser.add_argument("--max-procs", type=int, help="RLIMIT_NPROC per child (only for a dedicated user)")
    parser.add_argument("--preload", default="", help="comma-separated packages to import before forking")
    args = parser.parse_args(argv)
    if _prctl is not None:
        _prctl(PR_SET_DUMPABLE, 0)
    _warm_up([*PRELOAD, *filter(None, args.preload.split(","))])
    texts = protocol.TextTable()
    while True:
        request = protocol.read_frame(args.in_fd)
        if request is None:  # the client closed the pipe: we are done
            return 0
        deferred: list = []
        verdicts = judge(request["source"], texts.unpack(request), float(request["timeout_s"]), args.memory_mb,
                         args.max_procs, deferred)
        try:
            protocol.write_frame(args.out_fd, {"id": request["id"], "verdicts": [v.to_json() for v in verdicts]})
        except BrokenPipeError:  # the client went away mid-request
            return 0
        finally:
            for clean_up in deferred:  # reaping the child overlaps with the reply's way back
                clean_up()


if __name__ == "__main__":
    sys.exit(main())
