"""The sandbox supervisor: runs LLM-written `evaluate(response)` functions on strings.

    python -m autoif_dagster.sandbox.supervisor --in-fd N --out-fd M [--memory-mb 512]
        [--max-procs N] [--preload nltk,langdetect]
    python /path/to/supervisor.py --in-fd N --out-fd M            (same, as a plain script)
    python -m autoif_dagster.sandbox.supervisor --self-check      (can verifiers be confined here?)

Stdlib only, and imports nothing from the package but `protocol` and `seccomp`: the same
file must run in a container that holds only a Python interpreter.

It reads requests from --in-fd and writes responses to --out-fd (see protocol.py), never to
stdout. For each request it compiles the source once, then forks a child from this warm
process. The child moves into its own process group, rlimits and a scratch directory, runs
the module, and reports each input's verdict as soon as it has it, on a board shared with
the parent (a byte per input) or, for anything but pass/fail, over a private pipe.
Once the last verdict is in, the child is killed and reaped, what it left behind cleared
up, and the reply sent.

The wall-clock limit is enforced from outside: a signal handler inside the child could be
disabled by the verifier (`signal.alarm(0)`) and cannot interrupt C code (a catastrophic
regex, `10**10**10`). So when an input's deadline passes, the parent SIGKILLs the child's
whole process group, records TIMEOUT, and forks a fresh child for the remaining inputs.
A child that dies without answering gives CRASH for the input it was on.

The supervisor puts a seccomp filter on itself once its imports are done (no programs, no
tracing, no new namespaces: seccomp.py), which every child inherits; each child adds a short
one of its own (no processes, no signals) and a Python audit hook before it runs the
verifier: it cannot start programs or processes, signal anyone or trace anything,
and an attempt ends the child with an `exception` verdict for that input (it "retires": the
parent takes the verdict and forks a fresh child for the rest). Hitting RLIMIT_AS is a
`memory` verdict. The supervisor checks at start that a child can be confined (--self-check)
and refuses to judge otherwise.

Run as PID 1 of its own PID namespace (the Docker and host backends), it also sweeps up after
each child: it SIGKILLs every other process in the namespace and empties the temporary
directories, so that no verifier leaves anything for the next one.

The supervisor makes itself non-dumpable, so that a child running as the same user cannot
ptrace it or open /proc/<its pid>/fd/* to write forged responses on its output.
"""

import argparse
import builtins
import errno
import gc
import importlib
import json
import math
import mmap
import os
import resource
import select
import shutil
import signal
import sys
import tempfile
import time
from types import CodeType
from typing import Callable

if __package__:
    from . import protocol, seccomp
else:  # run as a plain script: protocol.py and seccomp.py sit next to this file
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import protocol
    import seccomp

Verdict = protocol.Verdict
_exit = os._exit

MIB = 1024 * 1024
DETAIL_CHARS = 200  # verdict details are diagnostics, not payloads
RESULT_FD = 3  # where the child keeps its end of the result pipe
MAX_RECORD_BYTES = 64 * 1024  # a longer "record" means the verifier scribbled on the pipe
READ_PACING_S = 0.002  # see _collect
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
PR_SET_DUMPABLE = 4
# A child's exit status after an attempt to spawn or signal: it reported the input's verdict
# and ended, so that no state of the attempt survives; the next input gets a fresh child.
RETIRED = 75
# Python's audit events for starting programs or processes and for signalling: the child
# turns each into an `exception` verdict, caught or not (the seccomp filter makes the calls
# fail in any case, also when made through ctypes).
FORBIDDEN_EVENTS = frozenset({
    "os.system", "os.exec", "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "subprocess.Popen",
    "os.kill", "os.killpg", "signal.pthread_kill", "os.pidfd_open",
})
# Imported once in the warm parent so that each child finds them in sys.modules instead of
# importing them again: the stdlib modules verifiers use most. --preload adds packages.
PRELOAD = ("re", "json", "string", "math", "collections", "itertools", "unicodedata", "datetime", "random")

try:  # loaded once here so that each child only makes one call
    import ctypes

    _libc = ctypes.CDLL(None, use_errno=True)
    _prctl = _libc.prctl
except (ImportError, OSError, AttributeError):  # no ctypes or not Linux: rely on RLIMIT_CPU
    _libc = _prctl = None
MADV_HUGEPAGE = 14  # from <linux/mman.h>
MADV_COLLAPSE = 25  # Linux 6.1+
HUGE_PAGE = 2 * MIB
HUGE_PAGES_EVERY = 500  # requests between two calls of _use_huge_pages (its heap grows)


# ---------------------------------------------------------------- the parent's side

# The child reports on a board, a shared anonymous mapping of one byte per input and one
# more: it marks input i's byte PASS_MARK or FAIL_MARK (a store, no system call: a write per
# verdict cost more than most verifiers take), and the last byte LOADED_MARK once the module
# ran and defined evaluate(). Anything else goes on the result pipe as a JSON line,
# ["verdict", kind, detail] for an input, whose byte it then marks PIPE_MARK, or
# ["module", kind, detail] when the module cannot be evaluated at all. The child closes the
# pipe when done; the parent wakes for that, for pipe records, and every PROGRESS_CHECK_S
# to see how far the child got. The board is the verifier's to scribble on, like the pipe:
# it can only forge its own verdicts, and a byte that is not a mark counts as garbage.
# The marks are the protocol's (protocol.MARKS): the answered board is the reply's marks.
PASS_MARK, FAIL_MARK, PIPE_MARK, LOADED_MARK = b"pfxl"
MARKS = b"pfx"
PROGRESS_CHECK_S = 0.005  # an input's deadline runs from when its predecessor was seen done

Marks = bytearray  # one of MARKS per input
Others = dict[int, Verdict]  # the verdict of each input marked PIPE_MARK


def judge(source: str, inputs: list[str], timeout_s: float, memory_mb: int,
          max_procs: int | None = None) -> list[Verdict]:
    """One verdict per input, in order."""
    marks, others = judge_marks(source, inputs, timeout_s, memory_mb, max_procs)
    shared = {PASS_MARK: Verdict(protocol.PASS), FAIL_MARK: Verdict(protocol.FAIL)}
    return [others[i] if mark == PIPE_MARK else shared[mark] for i, mark in enumerate(marks)]


def judge_marks(source: str, inputs: list[str], timeout_s: float, memory_mb: int,
                max_procs: int | None = None) -> tuple[Marks, Others]:
    """judge()'s verdicts as the reply carries them: a mark per input, and the verdicts of
    those marked PIPE_MARK."""
    _filters()  # built (and checked) in the parent: each child only installs them
    try:
        code = compile(source, "<verifier>", "exec", dont_inherit=True)
    except Exception as exc:  # SyntaxError, ValueError (NUL bytes), RecursionError...
        return Marks(b"x" * len(inputs)), dict.fromkeys(range(len(inputs)),
                                                        Verdict(protocol.COMPILE_ERROR, _describe_exception(exc)))
    marks, others = Marks(), {}
    while len(marks) < len(inputs):
        start = len(marks)
        answered, records = _run_child(code, inputs, start, timeout_s, memory_mb, max_procs)
        at = -1
        for verdict in records:  # one per PIPE_MARK, in order
            at = answered.index(PIPE_MARK, at + 1)
            others[start + at] = verdict
        marks += answered
    return marks, others


def _run_child(code: CodeType, inputs: list[str], start: int, timeout_s: float,
               memory_mb: int, max_procs: int | None) -> tuple[Marks, list[Verdict]]:
    """Marks for inputs[start:] from one child, and the verdicts of those marked PIPE_MARK:
    all of them, or those it gave before it timed out or died followed by a TIMEOUT/CRASH
    verdict for the input it was on."""
    count = len(inputs) - start
    _hard_limits()  # in the parent: each child finds them read
    # As PID 1 the temporary directory is private and emptied after every child (see
    # _clear_namespace): the child works there. Elsewhere it gets a directory of its own.
    scratch = tempfile.gettempdir() if _as_init() else tempfile.mkdtemp(prefix="verifier-")
    board = mmap.mmap(-1, count + 1)  # MAP_SHARED: the child's marks show here; zeroed
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child never returns into the supervisor's loop
        try:
            os.close(read_fd)
            _child(code, inputs[start:], write_fd, board, scratch, memory_mb, timeout_s, max_procs)
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
    loaded = False
    try:
        marks, records, ending = _collect(read_fd, board, count, timeout_s)
        loaded = board[count] == LOADED_MARK or ending is None
    finally:
        os.close(read_fd)
        _kill(pid)
        board.close()
        # Reaped before the reply goes out: while its exit is under way, its memory is still
        # shared with ours, and every page we touched meanwhile (encoding the reply) would
        # be copied for nothing. The next request is already waiting, so this costs no
        # throughput, only the reply's latency.
        status = _clean_up(pid, scratch)
    if ending is None:
        return marks, records
    if marks and os.waitstatus_to_exitcode(status) == RETIRED:  # it answered, then ended
        return marks, records
    kind, note = ending
    if kind == protocol.TIMEOUT:
        detail = f"no answer within {timeout_s:g} s"
    else:
        detail = _describe_status(status) + (f" ({note})" if note else "")
    if not loaded:  # the module's top level hung or died: every input would repeat that
        return Marks(b"x" * count), [Verdict(kind, f"top-level code: {detail}")] * count
    return marks + b"x", records + [Verdict(kind, detail)]


def _collect(fd: int, board: mmap.mmap, count: int,
             timeout_s: float) -> tuple[Marks, list[Verdict], tuple[str, str] | None]:
    """Gather the child's verdicts (board marks and pipe records) until `count` marks, a
    missed deadline, or its death. Returns (marks, the verdicts of its PIPE_MARKs, None or
    (TIMEOUT | CRASH, note)).

    Each input has timeout_s from when the previous one was seen answered (or the start).
    Pipe records are read in batches, at most every READ_PACING_S (waking up for each would
    cost a context switch per record); the pause ends early when the child closes the pipe.
    """
    marks = Marks()
    records: list[Verdict] = []  # verdicts from the pipe, in order; PIPE_MARKs claim them
    claimed = 0
    partial = b""  # the start of a record still being written
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    hangup = select.poll()  # eventmask 0: only POLLHUP (all writers gone) wakes it
    hangup.register(fd, 0)
    last_read = time.monotonic()  # as if just read: most children are done before pacing ends
    deadline = last_read + timeout_s
    ended = False
    while True:
        seen = len(marks)
        end = board.find(b"\0", seen, count)  # answered up to the first unmarked input
        segment = board[seen:count if end < 0 else end]
        if segment.translate(None, MARKS):
            return marks, records[:claimed], (protocol.CRASH, "garbage on the result board")
        piped = segment.count(PIPE_MARK)
        if claimed + piped > len(records):  # stop at the first mark whose record is not read yet
            at = -1
            for _ in range(len(records) - claimed + 1):
                at = segment.index(PIPE_MARK, at + 1)
            segment, piped = segment[:at], len(records) - claimed
        marks += segment
        claimed += piped
        if len(marks) == count:
            return marks, records[:claimed], None
        if ended:  # the child is gone: no more marks will come
            note = "garbage on the result pipe" if board[len(marks)] == PIPE_MARK else ""
            return marks, records[:claimed], (protocol.CRASH, note)
        now = time.monotonic()
        if len(marks) > seen:
            deadline = now + timeout_s
        remaining = deadline - now
        if remaining <= 0:
            return marks, records[:claimed], (protocol.TIMEOUT, "")
        wait_ms = math.ceil(min(remaining, PROGRESS_CHECK_S) * 1000)
        pause = last_read + READ_PACING_S - now
        if pause > 0:  # too soon after the last read: only the child's end wakes us
            events = hangup.poll(min(wait_ms, math.ceil(pause * 1000)))
        else:
            events = poller.poll(wait_ms)
        if not events:
            continue
        chunk = os.read(fd, 1024 * 1024)
        last_read = time.monotonic()
        if not chunk:  # the pipe closed: the child exited or was killed; one last look
            ended = True
            continue
        *lines, partial = (partial + chunk).split(b"\n")
        if len(partial) > MAX_RECORD_BYTES:
            return marks, records[:claimed], (protocol.CRASH, "garbage on the result pipe")
        for line in lines:
            try:
                tag, *rest = json.loads(line)
                if tag not in ("verdict", "module"):
                    raise ValueError(tag)
                verdict = Verdict.from_json(rest)  # validates the kind
            except (ValueError, TypeError, RecursionError):
                return marks, records[:claimed], (protocol.CRASH, "garbage on the result pipe")
            if tag == "module":
                return Marks(b"x" * count), [verdict] * count, None
            records.append(verdict)


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
    if not _clear_namespace():  # as PID 1 it emptied the temporary directory, the scratch
        shutil.rmtree(scratch, ignore_errors=True)
    return status


def _as_init() -> bool:
    """Whether we are PID 1 of a PID namespace (the Docker and host backends)."""
    return os.getpid() == 1


def _clear_namespace() -> bool:
    """Reap orphaned grandchildren. As PID 1 (of a container or a PID namespace, whose
    temporary directories are private tmpfs), first kill every other process in the
    namespace, so that whatever the child left running, even after setsid(), is gone, and
    empty the temporary directories: the next verifier finds no trace of this one.
    Whether it did so (whether we are PID 1)."""
    as_init = _as_init()
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
        for directory in (tempfile.gettempdir(), "/dev/shm", "/dev/mqueue"):  # POSIX queues too
            for entry in _listdir(directory):
                path = os.path.join(directory, entry)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    try:
                        os.unlink(path)
                    except OSError:
                        pass
    return as_init


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


def _child(code: CodeType, inputs: list[str], result_fd: int, board: mmap.mmap, scratch: str,
           memory_mb: int, timeout_s: float, max_procs: int | None) -> None:
    # Bind what reporting needs before the verifier runs: it may rebind os.write or json.dumps.
    write, close, dumps = os.write, os.close, json.dumps

    def send(*record: str) -> None:
        data = memoryview((dumps(record) + "\n").encode())
        while data:
            data = data[write(RESULT_FD, data):]

    _confine(result_fd, scratch, memory_mb, cpu_s=timeout_s * (len(inputs) + 1), max_procs=max_procs)
    position = [-1]  # the input being judged; -1: the module's top level

    def forbid(event: str, _args: tuple) -> None:
        if event not in FORBIDDEN_EVENTS:
            return
        detail = f"{event}: verifiers may not start programs or processes or send signals"
        if position[0] < 0:
            send("module", protocol.EXCEPTION, "top-level code: " + detail)
        else:
            send("verdict", protocol.EXCEPTION, detail)
            board[position[0]] = PIPE_MARK
        _exit(RETIRED)

    sys.addaudithook(forbid)  # cannot be removed again
    # Not "__main__": release verifiers often carry an `if __name__ == "__main__":` self-test.
    namespace = {"__name__": "verifier", "__builtins__": builtins}
    try:
        exec(code, namespace)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt included
        send("module", _error_kind(exc), "top-level code: " + _describe_exception(exc))
        return
    evaluate = namespace.get("evaluate")
    if not callable(evaluate):
        send("module", protocol.NO_EVALUATE, "no callable evaluate() defined")
        return
    board[len(inputs)] = LOADED_MARK
    for i, text in enumerate(inputs):
        position[0] = i
        try:
            result = evaluate(text)
        except BaseException as exc:
            send("verdict", _error_kind(exc), _describe_exception(exc))
            board[i] = PIPE_MARK  # after its record: the parent finds it on the pipe
            continue
        if type(result) is bool:
            board[i] = PASS_MARK if result else FAIL_MARK
        else:
            send("verdict", *_verdict_of(result))
            board[i] = PIPE_MARK
    # The parent stops waiting for more records when the pipe closes (grandchildren holding
    # it open only delay that).
    close(RESULT_FD)


def _confine(result_fd: int, scratch: str, memory_mb: int, cpu_s: float, max_procs: int | None) -> None:
    """Own process group, resource limits, no inherited descriptors, /dev/null stdio, scratch
    cwd, and the seccomp filter (last: setting up needs none of what it forbids)."""
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
    hard_limits = _hard_limits()
    for limit, value in limits:
        hard = hard_limits[limit]
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(limit, (value, value))

    os.dup2(result_fd, RESULT_FD)
    # Close everything else, the supervisor's protocol pipes above all.
    os.closerange(RESULT_FD + 1, hard_limits[resource.RLIMIT_NOFILE])
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    if devnull > 2:
        os.close(devnull)
    os.chdir(scratch)
    supervisor_filter, child_filter = _filters()
    if not _supervisor_confined:  # judge() called outside a supervisor: the child takes both
        supervisor_filter.install()
    child_filter.install()


_FILTERS: list["seccomp.Filter"] = []  # the supervisor's, the child's
_supervisor_confined = False  # whether this process installed its own filter


def _filters() -> list["seccomp.Filter"]:
    if not _FILTERS:
        _FILTERS.extend(seccomp.Filter(groups) for groups in (seccomp.SUPERVISOR_GROUPS, seccomp.CHILD_GROUPS))
    return _FILTERS


def confine_supervisor() -> None:
    """Put the supervisor's filter on this process (after its imports: those may start a
    program), for it and every child it forks."""
    global _supervisor_confined
    _filters()[0].install()
    _supervisor_confined = True


def self_check() -> str | None:
    """Whether a child here can be confined: None, or what is missing. A supervisor that
    cannot install its filter must not judge anything (no silent fallback to less isolation)."""
    try:
        filters = _filters()
    except (seccomp.SeccompUnavailable, OSError) as exc:
        return str(exc)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        try:
            for confinement in filters:
                confinement.install()
            message = b"".join(f"the seccomp filters let {call} through. ".encode()
                               for call, attempt in (("a fork", os.fork), ("an exec", lambda: os.execv("/", ["/"])))
                               if not _refused(attempt))
        except BaseException as exc:
            message = f"cannot install the seccomp filter: {exc}".encode()
        os.write(write_fd, message)
        _exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        message = pipe.read().decode()
    os.waitpid(pid, 0)
    return message.strip() or None


def _refused(attempt: Callable[[], object]) -> bool:
    """Whether a call failed with EPERM, as the filters make it (not EACCES or the like)."""
    try:
        if attempt() == 0:  # the child of a fork that went through: gone at once, unnoticed
            _exit(0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return False


_HARD_LIMITS: dict[int, int] = {}


def _hard_limits() -> dict[int, int]:
    """The supervisor's hard limits (RLIMIT_NOFILE: its soft one, which bounds its fds),
    read once in the parent (the first judge() call) instead of once per child: they do not
    change."""
    if not _HARD_LIMITS:
        for limit in (resource.RLIMIT_AS, resource.RLIMIT_CPU, resource.RLIMIT_FSIZE, resource.RLIMIT_CORE,
                      resource.RLIMIT_STACK, resource.RLIMIT_NPROC):
            _HARD_LIMITS[limit] = resource.getrlimit(limit)[1]
        _HARD_LIMITS[resource.RLIMIT_NOFILE] = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return _HARD_LIMITS


def _error_kind(exc: BaseException) -> str:
    """Hitting the memory limit is its own verdict: the verifier may be right, only too big."""
    return protocol.MEMORY if isinstance(exc, MemoryError) else protocol.EXCEPTION


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


def _use_huge_pages() -> None:
    """Back this process's heap with transparent huge pages where the kernel offers them
    (MADV_COLLAPSE, Linux 6.1+; elsewhere a no-op): fork() then copies, and each child's
    exit tears down, page tables for a few dozen huge pages instead of thousands of small
    ones, which made a fork about twice as cheap. Children still copy on write per 4 KiB
    page. Only our own private anonymous memory is touched."""
    if _libc is None:
        return
    try:
        madvise = _libc.madvise
        madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        with open("/proc/self/maps") as maps:
            lines = maps.read().splitlines()
    except (OSError, AttributeError):
        return
    for line in lines:
        fields = line.split()
        if len(fields) < 5 or fields[1] != "rw-p" or (len(fields) > 5 and fields[5] != "[heap]"):
            continue
        low, high = (int(address, 16) for address in fields[0].split("-"))
        start, end = -(-low // HUGE_PAGE) * HUGE_PAGE, high // HUGE_PAGE * HUGE_PAGE
        if end > start:  # errors (no THP, an old kernel, no memory) leave things as they were
            madvise(start, end - start, MADV_HUGEPAGE)
            madvise(start, end - start, MADV_COLLAPSE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--in-fd", type=int, help="read requests from this fd")
    parser.add_argument("--out-fd", type=int, help="write responses to this fd")
    parser.add_argument("--memory-mb", type=int, default=512, help="address-space cap per child")
    parser.add_argument("--max-procs", type=int, help="RLIMIT_NPROC per child (only for a dedicated user)")
    parser.add_argument("--preload", default="", help="comma-separated packages to import before forking")
    parser.add_argument("--self-check", action="store_true",
                        help="check that verifiers can be confined here, print what is missing, exit")
    args = parser.parse_args(argv)
    if not args.self_check and (args.in_fd is None or args.out_fd is None):
        parser.error("--in-fd and --out-fd are required")
    problem = self_check()
    if args.self_check or problem:
        print(f"sandbox supervisor: {problem}" if problem else "sandbox supervisor: ok",
              file=sys.stderr if problem else sys.stdout)
        return 3 if problem else 0
    if _prctl is not None:
        _prctl(PR_SET_DUMPABLE, 0)
    _warm_up([*PRELOAD, *filter(None, args.preload.split(","))])
    confine_supervisor()
    texts = protocol.TextTable()
    served = 0
    while True:
        if served % HUGE_PAGES_EVERY == 0:
            _use_huge_pages()
        served += 1
        request = protocol.read_frame(args.in_fd)
        if request is None:  # the client closed the pipe: we are done
            return 0
        marks, others = judge_marks(request["source"], texts.unpack(request), float(request["timeout_s"]),
                                    args.memory_mb, args.max_procs)
        try:
            protocol.write_frame(args.out_fd, {"id": request["id"],
                                               **protocol.encode_verdicts(marks.decode("ascii"), others)})
        except BrokenPipeError:  # the client went away mid-request
            return 0


if __name__ == "__main__":
    sys.exit(main())
