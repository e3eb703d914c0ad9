"""The verifier sandbox against the real supervisor process: no mocks.

Verifiers below are written the way the AutoIF release's LLM-written functions look.
"""

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pydantic
import pytest

from autoif_dagster.resources import supervisors as supervisors
from tests.ci import unavailable
from autoif_dagster.resources.sandbox import SandboxResource, VerifierJob
from autoif_dagster.resources.supervisors import Supervisor
from autoif_dagster.sandbox import protocol, supervisor
from autoif_dagster.sandbox.protocol import (
    COMPILE_ERROR, CRASH, EXCEPTION, FAIL, MEMORY, NO_EVALUATE, NON_BOOL, PASS, TIMEOUT, Verdict,
)

NO_LETTER_E = "def evaluate(response):\n    return 'e' not in response.lower()\n"

WORD_COUNT_WITH_HELPER = '''
def count_words(text):
    return len(text.split())

def evaluate(response):
    return 3 <= count_words(response) <= 5
'''

ENDS_WITH_QUESTION = '''
import re

def evaluate(response):
    sentences = [s for s in re.split(r'(?<=[.!?])\\s+', response.strip()) if s]
    return bool(sentences) and sentences[-1].endswith('?')
'''

VALID_JSON_OBJECT = '''
import json

def evaluate(response):
    try:
        return isinstance(json.loads(response), dict)
    except json.JSONDecodeError:
        return False
'''


@pytest.fixture
def sandbox() -> SandboxResource:
    return SandboxResource(backend="local", timeout_s=1.0, workers=2)


def judge_one(sandbox: SandboxResource, source: str, inputs: list[str]) -> list[Verdict]:
    (verdicts,) = sandbox.judge([VerifierJob(source, inputs)])
    return verdicts


def kinds(verdicts: list[Verdict]) -> list[str]:
    return [v.kind for v in verdicts]


# ---------------------------------------------------------------- protocol


def test_frames_round_trip_over_a_pipe():
    read_fd, write_fd = os.pipe()
    message = {"id": 7, "inputs": ["héllo", "emoji 🎉", "lone \ud800 surrogate"], "timeout_s": 1.5}
    protocol.write_frame(write_fd, message)
    with os.fdopen(write_fd, "wb") as writer:  # file objects work as well as raw descriptors
        protocol.write_frame(writer, [1, 2])
    assert protocol.read_frame(read_fd) == message
    assert protocol.read_frame(read_fd) == [1, 2]
    assert protocol.read_frame(read_fd) is None  # clean EOF
    os.close(read_fd)


def test_frames_reject_truncated_and_oversized_input():
    read_fd, write_fd = os.pipe()
    os.write(write_fd, (10).to_bytes(4, "big") + b'{"a"')
    os.close(write_fd)
    with pytest.raises(protocol.FrameError, match="ended"):
        protocol.read_frame(read_fd)
    os.close(read_fd)

    read_fd, write_fd = os.pipe()
    os.write(write_fd, (protocol.MAX_FRAME_BYTES + 1).to_bytes(4, "big"))
    with pytest.raises(protocol.FrameError, match="exceeds"):
        protocol.read_frame(read_fd)
    os.close(read_fd)
    os.close(write_fd)


def test_verdict_json_form_and_properties():
    verdict = Verdict(TIMEOUT, "no answer within 1 s")
    assert Verdict.from_json(verdict.to_json()) == verdict
    assert verdict.to_json() == ["timeout", "no answer within 1 s"]
    assert Verdict(PASS).passed and not Verdict(PASS).is_error
    assert not Verdict(FAIL).passed and not Verdict(FAIL).is_error
    assert all(Verdict(k).is_error for k in protocol.KINDS if k not in (PASS, FAIL))
    with pytest.raises(ValueError):
        Verdict.from_json(["maybe", ""])


def test_reply_verdicts_round_trip_and_malformed_replies_are_refused():
    crash = Verdict(CRASH, "killed by SIGSEGV")
    reply = protocol.encode_verdicts("pxf", {1: crash})
    assert reply == {"marks": "pxf", "others": [[1, "crash", "killed by SIGSEGV"]]}
    verdicts = protocol.decode_verdicts(reply, 3)
    assert verdicts == [Verdict(PASS), crash, Verdict(FAIL)]
    assert verdicts[0] is protocol.decode_verdicts({"marks": "p", "others": []}, 1)[0]  # shared
    for bad in ({"marks": "pxf", "others": []},  # an x without its verdict
                {"marks": "pxf", "others": [[0, "crash", ""]]},  # the verdict on a p, not the x
                {"marks": "pqf", "others": []},  # not a mark
                {"marks": "pxx", "others": [[1, "crash", ""], [1, "crash", ""]]},  # one slot twice
                {"marks": "px", "others": [[1, "maybe", ""]]},  # not a kind
                {"marks": "pf"},  # too few
                {"verdicts": [["pass", ""]] * 3}):
        with pytest.raises(ValueError):
            protocol.decode_verdicts(bad, 3)


# ---------------------------------------------------------------- correct verifiers


def test_realistic_verifiers_pass_and_fail(sandbox):
    jobs = [
        VerifierJob(NO_LETTER_E, ["A fun day at a park.", "Here is the answer."]),
        VerifierJob(WORD_COUNT_WITH_HELPER, ["one two three", "just two", "a b c d e f"]),
        VerifierJob(ENDS_WITH_QUESTION, ["Hi. How are you?", "Hi? I am fine."]),
        VerifierJob(VALID_JSON_OBJECT, ['{"a": 1}', "[1, 2]", "not json"]),
    ]
    assert [kinds(v) for v in sandbox.judge(jobs)] == [
        [PASS, FAIL], [PASS, FAIL, FAIL], [PASS, FAIL], [PASS, FAIL, FAIL],
    ]


def test_unicode_inputs_reach_the_verifier_intact(sandbox):
    source = "def evaluate(response):\n    return response == 'caf\\u00e9 \\U0001f389 \\ud800'\n"
    assert kinds(judge_one(sandbox, source, ["café 🎉 \ud800", "cafe"])) == [PASS, FAIL]


def test_many_jobs_come_back_in_order_with_two_workers(sandbox):
    jobs = [VerifierJob(f"def evaluate(response):\n    return len(response) == {n}\n", ["x" * n, "x"])
            for n in range(2, 14)]
    jobs.insert(5, VerifierJob(NO_LETTER_E, []))  # a job without inputs gets no verdicts
    results = sandbox.judge(jobs, progress=True)
    assert results[5] == []
    assert [kinds(v) for v in results[:5] + results[6:]] == [[PASS, FAIL]] * 12


def test_nothing_to_judge_starts_no_supervisor(sandbox, monkeypatch):
    def refuse(self):
        raise AssertionError("a supervisor was started")

    monkeypatch.setattr(Supervisor, "_start", refuse)
    assert sandbox.judge([]) == []
    assert sandbox.judge([VerifierJob(NO_LETTER_E, [])]) == [[]]


# ---------------------------------------------------------------- broken verifiers


def test_compile_error_and_missing_evaluate(sandbox):
    compile_error, no_function, not_callable = sandbox.judge([
        VerifierJob("def evaluate(response)\n    return True\n", ["a", "b"]),
        VerifierJob("def check(response):\n    return True\n", ["a", "b"]),
        VerifierJob("evaluate = True\n", ["a"]),
    ])
    assert kinds(compile_error) == [COMPILE_ERROR, COMPILE_ERROR]
    assert "SyntaxError" in compile_error[0].detail
    assert kinds(no_function) == [NO_EVALUATE, NO_EVALUATE]
    assert kinds(not_callable) == [NO_EVALUATE]


def test_exceptions_become_exception_verdicts(sandbox):
    raises, exits, interrupts, top_level = sandbox.judge([
        VerifierJob("def evaluate(response):\n    return response.split()[3] == 'x'\n", ["a b", "a b c x"]),
        VerifierJob("import sys\ndef evaluate(response):\n    sys.exit(0)\n", ["a"]),
        VerifierJob("def evaluate(response):\n    raise KeyboardInterrupt\n", ["a"]),
        VerifierJob("import nltk_not_installed_here\ndef evaluate(response):\n    return True\n", ["a", "b"]),
    ])
    assert kinds(raises) == [EXCEPTION, PASS]
    assert raises[0].detail.startswith("IndexError: list index out of range")
    assert kinds(exits) == [EXCEPTION] and exits[0].detail == "SystemExit: 0"
    assert kinds(interrupts) == [EXCEPTION] and interrupts[0].detail == "KeyboardInterrupt"
    assert kinds(top_level) == [EXCEPTION, EXCEPTION]
    assert "ModuleNotFoundError" in top_level[0].detail


def test_non_bool_results(sandbox):
    string_true, none, evil = sandbox.judge([
        VerifierJob("def evaluate(response):\n    return 'true' if response else 'false'\n", ["a"]),
        VerifierJob("def evaluate(response):\n    len(response) > 3\n", ["abcd"]),
        VerifierJob(
            "class Liar:\n"
            "    def __bool__(self):\n        raise RuntimeError('no truth here')\n"
            "    def __eq__(self, other):\n        raise RuntimeError('no equality either')\n"
            "def evaluate(response):\n    return Liar()\n",
            ["a", "b"],
        ),
    ])
    assert string_true == [Verdict(NON_BOOL, "returned str")]
    assert none == [Verdict(NON_BOOL, "returned NoneType")]
    assert evil == [Verdict(NON_BOOL, "returned Liar")] * 2


def test_numpy_bool_counts_as_bool(sandbox):
    pytest.importorskip("numpy")
    source = "import numpy as np\ndef evaluate(response):\n    return np.bool_(len(response) > 2)\n"
    assert kinds(judge_one(sandbox, source, ["abc", "a"])) == [PASS, FAIL]


# ---------------------------------------------------------------- time limits


def test_infinite_loop_times_out_and_the_other_inputs_are_still_judged(sandbox):
    source = (
        "def evaluate(response):\n"
        "    if 'loop' in response:\n"
        "        while True:\n            pass\n"
        "    return len(response.split()) <= 2\n"
    )
    start = time.monotonic()
    verdicts = judge_one(sandbox, source, ["short one", "loop forever", "far too many words here", "ok"])
    assert kinds(verdicts) == [PASS, TIMEOUT, FAIL, PASS]
    assert time.monotonic() - start < 4


def test_sleep_catastrophic_regex_and_signal_tampering_time_out(sandbox):
    sleeper = "import time\ndef evaluate(response):\n    time.sleep(100)\n    return True\n"
    regex = "import re\ndef evaluate(response):\n    return re.match(r'(a+)+$', 'a' * 40 + 'b') is None\n"
    tamperer = (
        "import signal\n"
        "def evaluate(response):\n"
        "    signal.alarm(0)\n"
        "    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM):\n"
        "        signal.signal(sig, signal.SIG_IGN)\n"
        "    while True:\n        pass\n"
    )
    start = time.monotonic()
    results = SandboxResource(backend="local", timeout_s=1.0, workers=3).judge(
        [VerifierJob(sleeper, ["a"]), VerifierJob(regex, ["a"]), VerifierJob(tamperer, ["a"])]
    )
    assert [kinds(v) for v in results] == [[TIMEOUT]] * 3
    assert time.monotonic() - start < 6


def test_top_level_infinite_loop_costs_one_timeout_not_one_per_input(sandbox):
    start = time.monotonic()
    verdicts = judge_one(sandbox, "while True:\n    pass\ndef evaluate(response):\n    return True\n", ["a"] * 5)
    assert kinds(verdicts) == [TIMEOUT] * 5
    assert time.monotonic() - start < 3


# ---------------------------------------------------------------- crashes and resources


def test_os_exit_crashes_only_that_input(sandbox):
    source = "import os\ndef evaluate(response):\n    if response == 'quit':\n        os._exit(3)\n    return True\n"
    verdicts = judge_one(sandbox, source, ["a", "quit", "b"])
    assert kinds(verdicts) == [PASS, CRASH, PASS]
    assert verdicts[1].detail == "exited with status 3"


@pytest.mark.parametrize("bomb", [
    "len('x' * 10**10) > 0",
    "[chunk for chunk in iter(lambda: bytearray(10**7), None)]",
])
def test_memory_bomb_is_a_memory_verdict_not_a_hang(bomb):
    source = f"def evaluate(response):\n    if response == 'bomb':\n        return {bomb}\n    return True\n"
    # A generous timeout so that only a real hang fails: filling memory takes CPU time.
    sandbox = SandboxResource(backend="local", timeout_s=5.0, memory_mb=128)
    start = time.monotonic()
    verdicts = judge_one(sandbox, source, ["bomb", "fine"])
    assert verdicts[0] == Verdict(MEMORY, "MemoryError")
    assert verdicts[1] == Verdict(PASS)
    assert time.monotonic() - start < 5


def test_memory_at_the_top_level_is_a_memory_verdict_for_every_input(sandbox):
    source = "blob = bytearray(10**10)\ndef evaluate(response):\n    return True\n"
    assert kinds(judge_one(SandboxResource(backend="local", memory_mb=128), source, ["a", "b"])) == [MEMORY, MEMORY]


def test_output_flood_does_not_disturb_the_protocol(sandbox):
    source = (
        "import os, sys\n"
        "def evaluate(response):\n"
        "    for _ in range(20000):\n"
        "        print('x' * 200)\n"
        "        sys.stderr.write('y' * 200)\n"
        "    os.write(1, b'\\x00\\x00\\x00\\x05junk')\n"
        "    return response.isupper()\n"
    )
    assert kinds(judge_one(sandbox, source, ["LOUD", "quiet"])) == [PASS, FAIL]


def test_files_are_written_to_a_scratch_dir_and_capped(sandbox, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    small = "def evaluate(response):\n    open('notes.txt', 'w').write(response)\n    return True\n"
    big = "def evaluate(response):\n    open('big.bin', 'wb').write(b'x' * (2 * 1024 * 1024))\n    return True\n"
    small_verdicts, big_verdicts = sandbox.judge([VerifierJob(small, ["hello"]), VerifierJob(big, ["a"])])
    assert kinds(small_verdicts) == [PASS]
    assert big_verdicts[0].kind == EXCEPTION and "File too large" in big_verdicts[0].detail
    assert list(tmp_path.iterdir()) == []


def test_host_environment_is_not_inherited(sandbox, monkeypatch):
    monkeypatch.setenv("AUTOIF_TEST_API_KEY", "sk-secret")
    source = "import os\ndef evaluate(response):\n    return 'AUTOIF_TEST_API_KEY' not in os.environ\n"
    assert kinds(judge_one(sandbox, source, ["a"])) == [PASS]


@pytest.mark.parametrize("attempt", [
    "os.fork()", "subprocess.run(['true'])", "os.system('true')", "os.execv('/bin/true', ['true'])",
    "os.posix_spawn('/bin/true', ['true'], {})", "os.kill(os.getppid(), signal.SIGKILL)",
    "os.killpg(os.getpgid(0), signal.SIGTERM)", "signal.pthread_kill(threading.main_thread().ident, 0)",
    "multiprocessing.Process(target=print).start()",
])
def test_spawning_or_signalling_is_an_exception_even_when_caught(sandbox, attempt):
    """The supervisor survives (the next input is judged on the same one) and the verdict
    names the attempt, although the verifier swallows the error and returns True."""
    source = (
        "import multiprocessing, os, signal, subprocess, threading\n"
        "def evaluate(response):\n"
        "    if response == 'try':\n"
        f"        try:\n            {attempt}\n"
        "        except BaseException:\n            pass\n"
        "    return True\n"
    )
    verdicts = judge_one(sandbox, source, ["a", "try", "b"])
    assert kinds(verdicts) == [PASS, EXCEPTION, PASS], verdicts
    assert "may not start programs or processes or send signals" in verdicts[1].detail


def test_forbidden_calls_fail_below_python_too(sandbox):
    """The seccomp filter: the raw system calls fail even where no audit event is raised."""
    source = (
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "def evaluate(response):\n"
        "    number = {'fork': 57, 'kill': 62, 'execve': 59}[response]\n"
        "    args = {'fork': (), 'kill': (os.getppid(), 0), 'execve': (b'/bin/true', None, None)}[response]\n"
        "    result = libc.syscall(number, *args)\n"
        "    if result == 0 and response == 'fork':\n        os._exit(0)\n"
        "    return result == -1 and ctypes.get_errno() == 1\n"
    )
    if os.uname().machine != "x86_64":
        unavailable(f"the seccomp filter knows x86_64's system call numbers, not {os.uname().machine}'s")
    assert kinds(judge_one(sandbox, source, ["fork", "kill", "execve"])) == [PASS, PASS, PASS]


def _in_a_fork(check) -> str:
    """Run check() in a forked child (filters are irreversible) and return what it wrote."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_fd)
            os.write(write_fd, check().encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        out = pipe.read()
    os.waitpid(pid, 0)
    return out


def test_the_supervisor_filter_refuses_programs_but_leaves_it_fork_and_kill():
    def check() -> str:
        supervisor.confine_supervisor()
        try:
            os.execv("/bin/true", ["true"])
        except PermissionError as exc:
            refused = exc.errno == errno.EPERM
        pid = os.fork()
        if pid == 0:
            time.sleep(10)
            os._exit(0)
        os.kill(pid, signal.SIGKILL)
        return f"{refused} {os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])}"

    assert _in_a_fork(check) == f"True {-signal.SIGKILL}"


def test_judge_outside_a_supervisor_still_confines_children_fully():
    """judge() in a process that never put the supervisor's filter on itself: each child
    installs both filters, so exec is refused there too."""
    source = "import os\ndef evaluate(response):\n    os.execv('/bin/true', ['true'])\n"
    assert not supervisor._supervisor_confined
    verdicts = _in_a_fork(lambda: repr(supervisor.judge(source, ["a"], 5.0, 512)))
    assert "EXCEPTION" in verdicts.upper() and "may not start programs" in verdicts


def test_each_child_installs_only_a_short_filter():
    """The kernel's cost to install a filter grows with its length; the child's is the
    supervisor's leftovers (fork, kill and the like), not the whole list."""
    child = len(supervisor.seccomp.program(supervisor.seccomp.CHILD_GROUPS)) // 8
    whole = len(supervisor.seccomp.program(supervisor.seccomp.SUPERVISOR_GROUPS)) // 8
    assert child <= 16 < whole


def test_threads_still_work(sandbox):
    source = (
        "import threading\n"
        "def evaluate(response):\n"
        "    out = []\n"
        "    t = threading.Thread(target=out.append, args=(response.upper(),))\n"
        "    t.start(); t.join()\n"
        "    return out == ['ABC']\n"
    )
    assert kinds(judge_one(sandbox, source, ["abc", "x"])) == [PASS, FAIL]


def _kill_supervisors_that_report(directory: Path, stop) -> None:
    """Outside help for the tests below: kill each supervisor whose pid a verifier wrote
    (verifiers cannot signal it themselves)."""
    killed = set()
    while not stop.is_set():
        for marker in directory.glob("*.pid"):
            pid = int(marker.read_text() or 0)
            if pid and pid not in killed:
                killed.add(pid)
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)


@pytest.fixture
def supervisor_killer(tmp_path):
    import threading

    stop = threading.Event()
    thread = threading.Thread(target=_kill_supervisors_that_report, args=(tmp_path, stop), daemon=True)
    thread.start()
    source = (
        "import os, time\n"
        "def evaluate(response):\n"
        f"    path = {str(tmp_path)!r} + f'/{{os.getppid()}}.pid'\n"
        "    with open(path + '.tmp', 'w') as f:\n        f.write(str(os.getppid()))\n"
        "    os.rename(path + '.tmp', path)\n"
        "    time.sleep(5)\n"
        "    return True\n"
    )
    yield source
    stop.set()
    thread.join()


def test_a_supervisor_killed_on_a_verifier_does_not_stop_the_run(supervisor_killer):
    jobs = [VerifierJob(NO_LETTER_E, ["abc", "eee"]), VerifierJob(supervisor_killer, ["a", "b"])]
    jobs += [VerifierJob(NO_LETTER_E, ["xyz", "see"]) for _ in range(3)]
    results = SandboxResource(backend="local", timeout_s=10.0, workers=1).judge(jobs)
    assert kinds(results[1]) == [CRASH, CRASH]
    assert "supervisor died" in results[1][0].detail
    assert [kinds(v) for v in results[:1] + results[2:]] == [[PASS, FAIL]] * 4


# ---------------------------------------------------------------- the supervisor on its own


def test_supervisor_runs_as_a_plain_script_in_isolated_mode(tmp_path):
    """The Docker backend runs supervisor.py by path with nothing else of the package around."""
    request_r, request_w = os.pipe()
    reply_r, reply_w = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-I", supervisor.__file__, "--in-fd", str(request_r), "--out-fd", str(reply_w)],
        pass_fds=(request_r, reply_w), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, cwd=tmp_path,
    )
    os.close(request_r)
    os.close(reply_w)
    protocol.write_frame(request_w, {"id": 1, "source": NO_LETTER_E, "inputs": ["abc", "e"], "timeout_s": 1.0})
    assert protocol.read_frame(reply_r) == {"id": 1, "marks": "pf", "others": []}
    picky = "def evaluate(response):\n    return {'e': True, 'abc': 1}[response]\n"
    protocol.write_frame(request_w, {"id": 2, "source": picky, "inputs": [1, 0, "z"], "timeout_s": 1.0})
    assert protocol.read_frame(reply_r) == {"id": 2, "marks": "pxx", "others": [
        [1, "non_bool", "returned int"], [2, "exception", "KeyError: 'z'"]]}
    os.close(request_w)  # EOF: the supervisor exits cleanly
    assert proc.wait(timeout=5) == 0
    assert proc.stdout.read() == b""  # nothing ever goes to stdout
    proc.stdout.close()
    os.close(reply_r)


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize("bad", [{"timeout_s": 0}, {"workers": 0}, {"memory_mb": 32}, {"backend": "podman"}])
def test_config_is_validated(bad):
    with pytest.raises(pydantic.ValidationError, match=next(iter(bad))):
        SandboxResource(**bad)


def test_describe_names_backend_and_isolation():
    facts = SandboxResource(backend="local").describe()
    assert facts["sandbox_backend"] == "local"
    assert "SIGKILL" in facts["isolation"]
    assert all(isinstance(v, str) for v in facts.values())


# ---------------------------------------------------------------- supervisors across calls


@pytest.fixture
def started(monkeypatch) -> list[Supervisor]:
    """Every supervisor started from now on, with a cold pool to begin with."""
    supervisors.shutdown_supervisors()
    found: list[Supervisor] = []
    original = Supervisor._start

    def recording(self):
        found.append(self)
        return original(self)

    monkeypatch.setattr(Supervisor, "_start", recording)
    yield found
    supervisors.shutdown_supervisors()


def _gone(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    return not status.exists() or "zombie" in status.read_text()


def test_supervisors_live_across_calls_until_shutdown(started):
    sandbox = SandboxResource(backend="local", timeout_s=1.0, workers=2)
    jobs = [VerifierJob(NO_LETTER_E, ["abc", "eee"]) for _ in range(6)]
    assert [kinds(v) for v in sandbox.judge(jobs)] == [[PASS, FAIL]] * 6
    assert [kinds(v) for v in sandbox.judge(jobs)] == [[PASS, FAIL]] * 6
    # Same settings but the time limit (sent with each request): the same pool.
    assert kinds(judge_one(sandbox.model_copy(update={"timeout_s": 2.0}), NO_LETTER_E, ["xyz"])) == [PASS]
    assert len(started) == 2
    pids = [s._proc.pid for s in started]
    assert not any(_gone(pid) for pid in pids)
    supervisors.shutdown_supervisors()
    assert all(_gone(pid) for pid in pids)
    judge_one(sandbox, NO_LETTER_E, ["abc"])  # a later call starts afresh
    assert len(started) == 3


def test_a_supervisor_that_died_between_calls_is_replaced(started):
    sandbox = SandboxResource(backend="local", timeout_s=1.0, workers=1)
    judge_one(sandbox, NO_LETTER_E, ["abc"])
    os.kill(started[0]._proc.pid, signal.SIGKILL)
    time.sleep(0.1)
    assert kinds(judge_one(sandbox, NO_LETTER_E, ["abc", "eee"])) == [PASS, FAIL]
    assert len(started) == 2


def test_without_keep_warm_nothing_outlives_the_call(started):
    sandbox = SandboxResource(backend="local", timeout_s=1.0, workers=2, keep_warm=False)
    sandbox.judge([VerifierJob(NO_LETTER_E, ["abc"])] * 3)
    assert len(started) == 2
    assert all(s._proc is None for s in started)  # stopped and reaped
    sandbox.judge([VerifierJob(NO_LETTER_E, ["abc"])])
    assert len(started) == 3


def test_a_forked_process_starts_its_own_supervisors(started):
    sandbox = SandboxResource(backend="local", timeout_s=1.0, workers=1)
    judge_one(sandbox, NO_LETTER_E, ["abc"])
    pid = os.fork()
    if pid == 0:  # the child: must not talk over the parent's pipes
        try:
            ok = kinds(judge_one(sandbox, NO_LETTER_E, ["abc", "eee"])) == [PASS, FAIL] and len(started) == 2
            supervisors.shutdown_supervisors()
        finally:
            os._exit(0 if ok else 1)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert kinds(judge_one(sandbox, NO_LETTER_E, ["eee"])) == [FAIL]  # ours still works
    assert len(started) == 1


def test_big_requests_and_replies_in_flight_do_not_deadlock():
    """Two jobs in flight per worker, each request and reply far bigger than a pipe holds."""
    long_error = "def evaluate(response):\n    raise ValueError(response[:300])\n"
    jobs = [VerifierJob(long_error, [f"{n}:{i}:" + "x" * 2000 for i in range(1500)]) for n in range(4)]
    results = SandboxResource(backend="local", timeout_s=2.0, workers=1).judge(jobs)
    assert all(len(v) == 1500 and all(x.kind == EXCEPTION for x in v) for v in results)
    assert results[3][7].detail.startswith("ValueError: 3:7:xxx")


def test_text_table_numbers_repeated_inputs_and_forgets(monkeypatch):
    client, server = protocol.TextTable(), protocol.TextTable()
    first = client.pack({"id": 1, "inputs": ["a", "b", "a"]})
    assert first["inputs"] == ["a", "b", 0] and "forget" not in first
    assert server.unpack(first) == ["a", "b", "a"]
    second = client.pack({"id": 2, "inputs": ["b", "c"]})
    assert second["inputs"] == [1, "c"] and server.unpack(second) == ["b", "c"]
    monkeypatch.setattr(protocol.TextTable, "MAX_CHARS", 2)
    third = client.pack({"id": 3, "inputs": ["c", "a"]})
    assert third == {"id": 3, "inputs": ["c", "a"], "forget": True}
    assert server.unpack(third) == ["c", "a"] and server.texts == ["c", "a"]
    for bad in ([7], [-1], [True], [1.0], [0, None]):
        with pytest.raises(ValueError):
            server.unpack({"inputs": bad})


def test_several_supervisors_killed_in_a_row(supervisor_killer):
    jobs = [VerifierJob(supervisor_killer, ["a"]) for _ in range(5)] + [VerifierJob(NO_LETTER_E, ["xyz", "see"])]
    results = SandboxResource(backend="local", timeout_s=10.0, workers=1).judge(jobs)
    assert [kinds(v) for v in results] == [[CRASH]] * 5 + [[PASS, FAIL]]


# ---------------------------------------------------------------- confinement checks


def test_a_supervisor_that_cannot_confine_its_children_refuses_to_judge(monkeypatch, capsys):
    def unavailable(groups):
        raise supervisor.seccomp.SeccompUnavailable("no seccomp filter for architecture 'vax'")

    monkeypatch.setattr(supervisor, "_FILTERS", [])
    monkeypatch.setattr(supervisor.seccomp, "Filter", unavailable)
    assert supervisor.main(["--self-check"]) == 3
    assert "no seccomp filter for architecture 'vax'" in capsys.readouterr().err
    assert supervisor.main(["--in-fd", "0", "--out-fd", "1"]) == 3  # never reads a request


def test_self_check_passes_here():
    assert supervisor.self_check() is None
    assert supervisor.main(["--self-check"]) == 0


def test_host_backend_names_what_is_missing(monkeypatch, tmp_path):
    host = supervisors.HostCommand(512)
    monkeypatch.setattr(supervisors.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="needs bubblewrap: `sudo apt-get install bubblewrap`"):
        host.check(str(tmp_path))
    monkeypatch.undo()
    monkeypatch.setattr(supervisors, "HOST_PYTHON", "/nonexistent/python3")
    with pytest.raises(RuntimeError, match="/nonexistent/python3, which is missing"):
        host.check(str(tmp_path))
    monkeypatch.undo()
    # bwrap refusing, as it does where user namespaces are off
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(supervisors.HostCommand, "command", lambda self, scratch: [str(fake)])
    with pytest.raises(RuntimeError, match="cannot confine verifiers here: bwrap: No permissions.*user namespaces"):
        host.check(str(tmp_path))
