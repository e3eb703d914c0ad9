"""Adversarial verifiers against the isolating backends: the real Docker engine and the host
fallback (namespaces). No mocks.

Each test runs its hostile verifier, then a well-behaved one on the same supervisor
(workers=1), and checks that the hostile one ended as a verdict, that the supervisor was
started once (it survived), that the next job was judged correctly, and that no process or
file was left behind. Escape attempts return True only if the escape worked, so any verdict
but PASS means the sandbox held.

Docker tests are skipped when no engine answers, unless AUTOIF_CI=1 (tests/ci.py), where
that is a failure.
"""

import http.server
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from autoif_dagster.resources import supervisors as supervisors
from autoif_dagster.resources.sandbox import SandboxResource, VerifierJob
from tests.ci import unavailable
from autoif_dagster.sandbox.protocol import CRASH, EXCEPTION, FAIL, MEMORY, NON_BOOL, PASS, TIMEOUT, Verdict

NO_LETTER_E = "def evaluate(response):\n    return 'e' not in response.lower()\n"
# True only when this child is alone with the supervisor in its PID namespace (pid 1).
ALONE = (
    "import os\n"
    "def evaluate(response):\n"
    "    pids = {int(p) for p in os.listdir('/proc') if p.isdigit()}\n"
    "    return pids == {1, os.getpid()}\n"
)


def _docker_problem() -> str | None:
    """Why the docker backend cannot run here, or None."""
    try:
        SandboxResource(backend="docker").runner().supervisor_factory("/nonexistent")
    except RuntimeError as exc:
        return str(exc)
    return None


@pytest.fixture(scope="module", params=["docker", "host"])
def backend(request) -> str:
    if request.param == "docker" and (problem := _docker_problem()):
        unavailable(problem)
    return request.param


@pytest.fixture
def starts(monkeypatch) -> list[int]:
    """Counts supervisor starts, whatever the backend."""
    count: list[int] = []
    for cls in (supervisors.Supervisor, supervisors.ContainerSupervisor):
        original = cls._start

        def counting(self, original=original):
            count.append(1)
            return original(self)

        monkeypatch.setattr(cls, "_start", counting)
    return count


@pytest.fixture
def judge(backend, starts) -> Iterator:
    """judge(source, inputs, timeout_s=1.0) -> verdicts, after which the supervisor must
    still be the first one and judge a well-behaved verifier correctly, with nothing left
    over in its namespace (or, for the host backend, on the host)."""

    def run(source: str, inputs: list[str], timeout_s: float = 1.0, **config) -> list[Verdict]:
        sandbox = SandboxResource(backend=backend, timeout_s=timeout_s, workers=1, **config)
        supervisors.shutdown_supervisors()  # a fresh supervisor: it must survive the hostile job
        starts.clear()
        hostile, after, alone = sandbox.judge(
            [VerifierJob(source, inputs), VerifierJob(NO_LETTER_E, ["abc", "eee"]), VerifierJob(ALONE, ["x"])]
        )
        assert kinds(after) == [PASS, FAIL]
        assert kinds(alone) == [PASS], "a process outlived its verifier"
        assert len(starts) == 1, "the supervisor had to be restarted"
        return hostile

    yield run
    supervisors.shutdown_supervisors()  # what the end of the process does
    assert _nobody_processes_after_exit() == [], "a sandbox process outlived the run"
    if backend == "docker":
        import docker

        left = docker.from_env().containers.list(all=True, filters={"label": supervisors.CONTAINER_LABEL})
        assert left == [], "a sandbox container outlived the run"


def kinds(verdicts: list[Verdict]) -> list[str]:
    return [v.kind for v in verdicts]


def escape(body: str) -> str:
    """A verifier that returns True only if `body` (which sets `ok`) ran without an error."""
    indented = "\n".join("        " + line for line in body.strip().splitlines())
    return (
        "import os, socket, sys\n"
        "def evaluate(response):\n"
        "    ok = False\n"
        "    try:\n"
        f"{indented}\n"
        "    except Exception:\n"
        "        return False\n"
        "    return ok\n"
    )


def _nobody_processes_after_exit(wait_s: float = 5.0) -> list[int]:
    """Those still there after wait_s: the PID-1 supervisor of a bwrap namespace takes up to
    a second or so to be gone after bwrap itself returns."""
    deadline = time.monotonic() + wait_s
    while (left := _nobody_processes()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def _nobody_processes() -> list[int]:
    """Host processes running as `nobody`, the host backend's user."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == supervisors.NOBODY:
                    found.append(int(entry.name))
            except FileNotFoundError:
                pass
    return found


# ---------------------------------------------------------------- time


@pytest.mark.parametrize("body", [
    "while True:\n        pass",
    "import time\n    time.sleep(100)",
    "import re\n    re.match(r'(a+)+$', 'a' * 40 + 'b')",
    "10 ** 10 ** 10",
    "import signal\n    signal.alarm(0)\n    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM):\n"
    "        signal.signal(s, signal.SIG_IGN)\n    while True:\n        pass",
], ids=["loop", "sleep", "regex", "power", "signals"])
def test_endless_work_times_out(judge, body):
    start = time.monotonic()
    verdicts = judge(f"def evaluate(response):\n    {body}\n    return True\n", ["a", "b"], timeout_s=0.5)
    assert kinds(verdicts) == [TIMEOUT, TIMEOUT]
    assert time.monotonic() - start < 8


def test_threads_that_never_end_do_not_hold_the_batch(judge):
    source = (
        "import threading\n"
        "def spin():\n    while True:\n        pass\n"
        "def evaluate(response):\n"
        "    threading.Thread(target=spin).start()\n"  # not a daemon: it would block a normal exit
        "    return len(response) == 1\n"
    )
    assert kinds(judge(source, ["a", "bb"])) == [PASS, FAIL]


# ---------------------------------------------------------------- resources and processes


@pytest.mark.parametrize("bomb", [
    "len('x' * 10**10) > 0",
    "[bytearray(10**7) for _ in range(10**4)]",
])
def test_memory_bombs_end_as_memory_verdicts(judge, bomb):
    verdicts = judge(f"def evaluate(response):\n    return {bomb}\n", ["a"], timeout_s=5.0, memory_mb=128)
    assert kinds(verdicts) == [MEMORY]


def test_deep_recursion(judge):
    source = (
        "import sys\nsys.setrecursionlimit(10**7)\n"
        "def down(n):\n    return down(n + 1) + 1\n"
        "def evaluate(response):\n    return down(0) > 0\n"
    )
    # Python 3.11 frames live on the heap: this ends on the memory cap, a stack overflow or,
    # on a loaded machine, the time limit; any of them is a verdict, not a hang.
    assert kinds(judge(source, ["a"], timeout_s=2.0, memory_mb=128))[0] in (EXCEPTION, CRASH, TIMEOUT)


@pytest.mark.parametrize("attempt", [
    "os.fork()",
    "os.setsid() if os.fork() == 0 else None",
    "subprocess.run(['sh', '-c', 'sleep 100 &'])",
    "os.system('sleep 100 &')",
    "os.execv('/bin/sh', ['sh'])",
    "os.posix_spawn('/bin/sh', ['sh'], {})",
    "multiprocessing.Process(target=print).start()",
    "pty.spawn('/bin/sh')",
])
def test_no_programs_or_processes_of_its_own(judge, attempt):
    """Each attempt is an exception verdict although the verifier swallows the error; the
    supervisor survives (`judge` saw one start) and nothing is left running (ALONE)."""
    source = (
        "import multiprocessing, os, pty, subprocess\n"
        "def evaluate(response):\n"
        f"    try:\n        {attempt}\n"
        "    except BaseException:\n        pass\n"
        "    return True\n"
    )
    verdicts = judge(source, ["a", "b"])
    assert kinds(verdicts) == [EXCEPTION, EXCEPTION], verdicts
    assert "may not start programs or processes" in verdicts[0].detail


@pytest.mark.parametrize("attempt", [
    "os.kill(os.getppid(), sig)", "os.kill(1, sig)", "os.kill(-1, sig)", "os.killpg(0, sig)",
    "signal.pthread_kill(threading.main_thread().ident, sig)",
])
@pytest.mark.parametrize("sig", ["SIGKILL", "SIGTERM", "SIGSTOP"])
def test_no_signals(judge, attempt, sig):
    source = (
        "import os, signal, threading\n"
        "def evaluate(response):\n"
        f"    sig = signal.{sig}\n"
        f"    try:\n        {attempt}\n"
        "    except BaseException:\n        pass\n"
        "    return True\n"
    )
    assert kinds(judge(source, ["a"])) == [EXCEPTION]  # and `judge` saw a single start


def test_raw_system_calls_are_refused_too(judge):
    """Through ctypes, where Python raises no audit event: the seccomp filter."""
    if os.uname().machine != "x86_64":
        unavailable(f"the seccomp filter knows x86_64's system call numbers, not {os.uname().machine}'s")
    source = (
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "CALLS = {'fork': (57,), 'vfork': (58,), 'kill': (62, 1, 9), 'tgkill': (234, 1, 1, 9),\n"
        "         'execve': (59, b'/bin/sh', None, None), 'ptrace': (101, 16, 1, 0, 0),\n"
        "         'unshare': (272, 0x20000000), 'clone': (56, 17, 0, 0, 0, 0), 'x32_getpid': (0x40000000 + 39,)}\n"
        "def evaluate(response):\n"
        "    result = libc.syscall(*CALLS[response])\n"
        "    if result == 0 and response in ('fork', 'vfork', 'clone'):\n        os._exit(0)\n"
        "    return result == -1 and ctypes.get_errno() == 1\n"
    )
    names = ["fork", "vfork", "kill", "tgkill", "execve", "ptrace", "unshare", "clone", "x32_getpid"]
    assert kinds(judge(source, names)) == [PASS] * len(names)


def test_a_memory_hog_is_a_memory_verdict(judge):
    source = "def evaluate(response):\n    return len(bytearray(10**9 * len(response))) >= 0\n"
    assert kinds(judge(source, ["", "a"], memory_mb=128)) == [PASS, MEMORY]


@pytest.mark.parametrize("exit_call", ["sys.exit(0)", "os._exit(0)", "raise KeyboardInterrupt", "exit()"])
def test_exits_end_as_verdicts(judge, exit_call):
    verdicts = judge(f"import os, sys\ndef evaluate(response):\n    {exit_call}\n", ["a", "b"])
    assert kinds(verdicts)[0] in (EXCEPTION, CRASH) and kinds(verdicts)[1] in (EXCEPTION, CRASH)


# ---------------------------------------------------------------- output and the protocol


def test_output_floods_and_forged_results_change_nothing(judge):
    forged = b'\x00\x00\x00\x24{"id":0,"verdicts":[["pass",""]]}'
    source = (
        "import os, sys\n"
        "def evaluate(response):\n"
        "    for _ in range(5000):\n"
        "        print('x' * 200)\n        sys.stderr.write('y' * 200)\n"
        f"    for fd in (1, 2):\n        os.write(fd, {forged!r})\n"
        "    print('[\"verdict\", \"pass\", \"\"]')\n"
        "    for path in ('/proc/1/fd/1', '/proc/1/fd/0', '/proc/self/fd/1'):\n"
        "        try:\n"
        f"            with open(path, 'wb') as f:\n                f.write({forged!r})\n"
        "        except OSError:\n            pass\n"
        "    return False\n"
    )
    assert kinds(judge(source, ["a", "b"])) == [FAIL, FAIL]


def test_bad_results_and_bad_sources(judge):
    liar = (
        "class Liar:\n"
        "    def __bool__(self):\n        raise RuntimeError\n"
        "    def __eq__(self, other):\n        raise RuntimeError\n"
        "def evaluate(response):\n    return Liar()\n"
    )
    assert kinds(judge(liar, ["a"])) == [NON_BOOL]
    assert kinds(judge("def evaluate(response):\n    return 'True'\n", ["a"])) == [NON_BOOL]
    assert kinds(judge("def evaluate(response)\n    return True\n", ["a"]))[0] == "compile_error"
    assert kinds(judge("def check(response):\n    return True\n", ["a"]))[0] == "no_evaluate"


# ---------------------------------------------------------------- host files and secrets


def test_host_files_cannot_be_read(judge, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("sk-host-secret")
    source = escape(
        f"for path in ({str(secret)!r}, '/etc/shadow', '/proc/1/environ', '/proc/1/mem'):\n"
        "    try:\n"
        "        with open(path, 'rb') as f:\n"
        "            ok = ok or len(f.read(100)) > 0\n"
        "    except OSError:\n"
        "        pass"
    )
    assert kinds(judge(source, ["a"])) == [FAIL]


def test_env_secrets_are_not_visible(judge, monkeypatch):
    monkeypatch.setenv("AUTOIF_TEST_API_KEY", "sk-secret")
    source = escape(
        "ok = 'AUTOIF_TEST_API_KEY' in os.environ\n"
        "for pid in ('1', 'self'):\n"
        "    try:\n"
        "        ok = ok or b'sk-secret' in open(f'/proc/{pid}/environ', 'rb').read()\n"
        "    except OSError:\n"
        "        pass"
    )
    assert kinds(judge(source, ["a"])) == [FAIL]


def test_writes_and_deletes_outside_the_scratch_dir_fail(judge, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    project = supervisors.PROJECT_ROOT
    targets = [str(tmp_path / "planted.txt"), str(project / "planted.txt"), "/etc/planted", "/usr/planted"]
    source = escape(
        f"for path in {targets!r}:\n"
        "    try:\n"
        "        open(path, 'w').write('x')\n"
        "        ok = True\n"
        "    except OSError:\n"
        "        pass\n"
        "try:\n"
        f"    os.remove({str(victim)!r})\n"
        "    ok = True\n"
        "except OSError:\n"
        "    pass"
    )
    assert kinds(judge(source, ["a"])) == [FAIL]
    assert victim.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["victim.txt"]
    assert not (project / "planted.txt").exists()


def test_temporary_files_do_not_reach_the_host_or_the_next_verifier(judge, backend):
    marker = f"autoif-sandbox-test-{os.getpid()}"
    writer = f"def evaluate(response):\n    open('/tmp/{marker}', 'w').write('x')\n    return True\n"
    assert kinds(judge(writer, ["a"])) == [PASS]
    assert not Path("/tmp", marker).exists()
    reader = f"import os\ndef evaluate(response):\n    return os.path.exists('/tmp/{marker}')\n"
    sandbox = SandboxResource(backend=backend, timeout_s=1.0, workers=1)
    assert [kinds(v) for v in sandbox.judge([VerifierJob(writer, ["a"]), VerifierJob(reader, ["a"])])] == [[PASS], [FAIL]]


# Every directory in which a verifier can create a file, outside /proc and /sys.
WRITABLE = (
    "import os\n"
    "def writable():\n"
    "    found = []\n"
    "    for top, dirs, _ in os.walk('/'):\n"
    "        dirs[:] = [d for d in dirs if os.path.join(top, d) not in ('/proc', '/sys')]\n"
    "        probe = os.path.join(top, '.autoif-probe')\n"
    "        try:\n"
    "            open(probe, 'w').close()\n"
    "            os.remove(probe)\n"
    "            found.append(top)\n"
    "        except OSError:\n"
    "            pass\n"
    "    return found\n"
)


def test_nothing_crosses_a_job_boundary_through_any_writable_path(backend):
    """A first job plants a file (and a directory) in every place it can write; a second job
    on the same supervisor finds none of them; the host sees none either."""
    marker = f"autoif-plant-{os.getpid()}"
    planter = WRITABLE + (
        "def evaluate(response):\n"
        "    places = writable()\n"
        "    for d in places:\n"
        f"        open(os.path.join(d, {marker!r}), 'w').write('x')\n"
        "        try:\n"
        f"            os.mkdir(os.path.join(d, {marker!r} + '.d'))\n"
        "        except OSError:  # /dev/mqueue holds queues only\n"
        "            pass\n"
        "    return len(places) > 0\n"
    )
    finder = WRITABLE + (
        "def evaluate(response):\n"
        "    for top, dirs, files in os.walk('/'):\n"
        "        dirs[:] = [d for d in dirs if os.path.join(top, d) not in ('/proc', '/sys')]\n"
        f"        if any(name.startswith({marker!r}) for name in files + dirs):\n"
        "            return True\n"
        "    return False\n"
    )
    sandbox = SandboxResource(backend=backend, timeout_s=10.0, workers=1)
    supervisors.shutdown_supervisors()
    planted, found = sandbox.judge([VerifierJob(planter, ["a"]), VerifierJob(finder, ["a"])])
    assert kinds(planted) == [PASS] and kinds(found) == [FAIL]
    # The writable places: the temporary directories, the child's own scratch in /tmp, and
    # (Docker) the POSIX message queues; the supervisor empties each after every child.
    for place in ("/tmp", "/dev/shm"):
        assert kinds(sandbox.judge([VerifierJob(WRITABLE + f"def evaluate(r):\n    return {place!r} in writable()\n",
                                                ["a"])])[0]) == [PASS], place
    only = WRITABLE + (
        "def evaluate(r):\n"
        "    return all(d in ('/tmp', '/dev/shm', '/dev/mqueue') or d.startswith('/tmp/') for d in writable())\n"
    )
    assert kinds(sandbox.judge([VerifierJob(only, ["a"])])[0]) == [PASS]
    for place in ("/tmp", "/dev/shm", "/var/tmp"):
        assert not any(p.name.startswith(marker) for p in Path(place).glob("*")), place


@pytest.fixture
def host_markers(tmp_path) -> Iterator[tuple[str, list[str]]]:
    """World-readable files with a secret on the host, where an attacker would guess."""
    secret = f"autoif-host-secret-{os.getpid()}"
    places = [Path("/var/lib") / f"{secret}.conf", Path("/etc") / f"{secret}.conf", Path("/opt") / f"{secret}.txt",
              supervisors.PROJECT_ROOT / f"{secret}.txt", tmp_path / "secret.txt", Path.home() / f"{secret}.txt"]
    written = []
    for path in places:
        try:
            path.write_text(secret)
            path.chmod(0o644)
            written.append(path)
        except OSError:
            pass
    yield secret, [str(p) for p in written]
    for path in written:
        path.unlink(missing_ok=True)


def test_host_files_at_guessed_paths_are_not_there(judge, host_markers):
    """Neither the planted files, nor the Docker socket, nor anything in the host's home
    directories or the project (the container's own empty /root and /home may exist)."""
    secret, paths = host_markers
    source = escape(
        f"for path in {paths!r} + ['/var/run/docker.sock', '/run/docker.sock']:\n"
        "    ok = ok or os.path.exists(path)\n"
        "for path in ['/root', '/home', '/work', os.path.expanduser('~')]:\n"
        "    try:\n"
        "        ok = ok or bool(os.listdir(path))\n"
        "    except OSError:\n"
        "        pass\n"
        "for top, dirs, files in os.walk('/'):\n"
        "    dirs[:] = [d for d in dirs if os.path.join(top, d) not in ('/proc', '/sys', '/usr')]\n"
        f"    ok = ok or any({secret!r} in name for name in files)"
    )
    assert kinds(judge(source, ["a"], timeout_s=10.0)) == [FAIL]


def test_other_processes_are_out_of_sight(judge):
    """/proc shows the supervisor and the child only: nothing of the host (this pytest)."""
    source = escape(
        "me = str(os.getpid())\n"
        "pids = [p for p in os.listdir('/proc') if p.isdigit()]\n"
        "ok = sorted(pids) != sorted(['1', me])\n"
        "for pid in pids:\n"
        "    try:\n"
        "        ok = ok or b'pytest' in open(f'/proc/{pid}/cmdline', 'rb').read()\n"
        "    except OSError:\n"
        "        pass"
    )
    assert kinds(judge(source, ["a"])) == [FAIL]


# ---------------------------------------------------------------- network


@pytest.fixture
def host_http_server() -> Iterator[tuple[int, list[str]]]:
    """An HTTP server in this (host) process on every interface, and the host's IPv4 addresses
    it answers on: loopback, and the others (Docker's bridge gateway among them, through which
    a container on the default network reaches the host)."""
    server = http.server.HTTPServer(("0.0.0.0", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    addresses = ["127.0.0.1"] + [a for a in subprocess.run(["hostname", "-I"], capture_output=True, text=True,
                                                            check=True).stdout.split() if ":" not in a]
    yield server.server_address[1], addresses
    server.shutdown()
    server.server_close()


# True when the child's network namespace holds no interface but loopback
ONLY_LOOPBACK = (
    "def evaluate(response):\n"
    "    lines = open('/proc/net/dev').read().splitlines()[2:]\n"
    "    return [line.split(':')[0].strip() for line in lines] == ['lo']\n"
)


def test_network_is_unreachable(judge, host_http_server):
    """The claim rests on probes that succeed without the sandbox, shown by running them
    unisolated first: this process's HTTP server on loopback and on each host address, and the
    interfaces a child sees (only loopback: an empty namespace). The DNS and outside-address
    probes are kept for completeness, but on an offline machine (this one, CI) they fail with or
    without the sandbox and prove nothing on their own."""
    port, addresses = host_http_server
    reach = {f"http {a}": f"import urllib.request\nok = urllib.request.urlopen('http://{a}:{port}/', timeout=0.5).status == 200"
             for a in addresses}
    unisolated = SandboxResource(backend="local", timeout_s=2.0).judge(
        [VerifierJob(escape(body), ["a"]) for body in reach.values()] + [VerifierJob(ONLY_LOOPBACK, ["a"])])
    assert [kinds(v) for v in unisolated] == [[PASS]] * len(reach) + [[FAIL]]  # the probes can see an escape
    attempts = {
        **reach,
        "raw": "socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)\nok = True",
        "docker": "s = socket.socket(socket.AF_UNIX)\ns.connect('/var/run/docker.sock')\nok = True",
        "dns (offline anyway)": "ok = bool(socket.getaddrinfo('pypi.org', 443))",
        "outside (offline anyway)": "socket.create_connection(('151.101.0.223', 443), timeout=0.5)\nok = True",
    }
    for name, body in attempts.items():
        assert kinds(judge(escape(body), ["a"], timeout_s=2.0)) == [FAIL], name
    assert kinds(judge(ONLY_LOOPBACK, ["a"])) == [PASS]


# ---------------------------------------------------------------- configuration and errors


def test_the_packages_verifiers_use_import_in_the_child(judge):
    """The image (and, for host, Debian's packages) holds what release verifiers import; none
    is imported before the fork, so each child imports its own within the limits."""
    source = (
        "import emoji, langdetect, nltk, numpy\n"
        "langdetect.DetectorFactory.seed = 0\n"
        "def evaluate(response):\n"
        "    return emoji.emoji_count(response) == 1 and langdetect.detect(response) == 'en'\n"
    )
    hello = "Hello there, this is a short English sentence about the weather today \N{SUN WITH FACE}"
    assert kinds(judge(source, [hello, hello.replace("\N{SUN WITH FACE}", "")], timeout_s=20.0)) == [PASS, FAIL]


def test_describe_is_truthful(backend):
    facts = SandboxResource(backend=backend).describe()
    assert facts["sandbox_backend"] == backend
    if backend == "docker":
        assert "no network" in facts["isolation"] and "read-only root" in facts["isolation"]
    else:
        assert "private root" in facts["isolation"] and "network" in facts["isolation"]
    assert "seccomp filter (no processes, programs or signals)" in facts["isolation"]


def test_missing_engine_and_missing_image_name_the_setup_script(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(RuntimeError, match="no Docker engine.*setup_docker.sh"):
        SandboxResource(backend="docker").judge([VerifierJob(NO_LETTER_E, ["a"])])
    monkeypatch.delenv("DOCKER_HOST")
    if _docker_problem() is None:
        with pytest.raises(RuntimeError, match="missing.*setup_docker.sh"):
            SandboxResource(backend="docker", image="autoif-sandbox:no-such-tag").judge([VerifierJob(NO_LETTER_E, ["a"])])


# ---------------------------------------------------------------- across judge() calls


def test_supervisors_live_across_calls_and_a_dead_one_is_replaced(backend, starts):
    sandbox = SandboxResource(backend=backend, timeout_s=1.0, workers=1)
    supervisors.shutdown_supervisors()
    starts.clear()
    for _ in range(3):
        assert kinds(sandbox.judge([VerifierJob(NO_LETTER_E, ["abc", "eee"])])[0]) == [PASS, FAIL]
    assert len(starts) == 1
    (supervisor,) = next(iter(supervisors._POOLS.values()))._idle
    if backend == "docker":  # killed from outside, as an engine restart would
        import docker

        docker.from_env().api.remove_container(supervisor._container, force=True)
    else:
        os.kill(supervisor._proc.pid, 9)
    time.sleep(0.2)
    assert kinds(sandbox.judge([VerifierJob(NO_LETTER_E, ["abc", "eee"])])[0]) == [PASS, FAIL]
    assert len(starts) == 2
    supervisors.shutdown_supervisors()
    assert _nobody_processes_after_exit() == []
    if backend == "docker":
        left = docker.from_env().containers.list(all=True, filters={"id": supervisor._container or "none"})
        assert left == []


def test_an_engine_that_refuses_the_security_options_is_named():
    if (problem := _docker_problem()) is not None:
        unavailable(problem)
    import docker

    client = docker.from_env()
    bad = client.api.create_host_config(security_opt=["seccomp=/nonexistent/profile.json"])
    with pytest.raises(RuntimeError, match="sandbox backend 'docker'.*(refused|could not run).*seccomp"):
        supervisors.check_container(client, SandboxResource(backend="docker").runner().image(), ["--memory-mb", "128"], bad)
