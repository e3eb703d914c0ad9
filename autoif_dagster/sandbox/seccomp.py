"""The seccomp filters under which verifiers run: no programs, processes or signals of
their own.

A verifier has no business starting programs (`subprocess`, `os.system`, `os.exec*`),
forking, signalling another process (its supervisor above all), tracing or reading another
process's memory, or leaving the namespaces it was put in. The system calls behind all of
these are forbidden before the verifier's code runs (the supervisor's filter and the
child's, below): they fail with EPERM, which Python raises as PermissionError (an
`exception` verdict unless the verifier catches it, and then it has still started nothing). Threads stay allowed (`clone` with CLONE_THREAD),
so libraries that start worker threads still import. `clone3` answers ENOSYS: its flags sit
in memory a filter cannot read, and glibc falls back to `clone` on ENOSYS.

Stdlib only (ctypes), like the supervisor: the same file runs inside the container. A
filter stacks on any the process already has (Docker's default profile), never loosening it.
A system call of another ABI than the filter's (x86's int 0x80, x32) is refused outright.
"""

import ctypes
import errno
import platform
import struct

# <linux/filter.h>, <linux/seccomp.h>, <linux/audit.h>
_LD_W_ABS, _JEQ_K, _JGE_K, _JSET_K, _RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_NR, _ARCH, _ARG0 = 0, 4, 16  # offsets in struct seccomp_data (little-endian: arg0's low word)
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_SPEC_ALLOW = 1, 4
SYS_SECCOMP = {"x86_64": 317, "aarch64": 277}
CLONE_THREAD = 0x00010000
X32_SYSCALL_BIT = 0x40000000

# Per architecture: its audit id and the forbidden calls' numbers (asm/unistd_64.h), by group.
_ARCHES = {
    "x86_64": (0xC000003E, {
        "programs": {"execve": 59, "execveat": 322},
        "processes": {"fork": 57, "vfork": 58},
        "signal": {"kill": 62, "tkill": 200, "tgkill": 234, "rt_sigqueueinfo": 129,
                   "rt_tgsigqueueinfo": 297, "pidfd_send_signal": 424},
        "other processes": {"ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311},
        "escape": {"unshare": 272, "setns": 308, "bpf": 321, "perf_event_open": 298,
                   "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
                   "io_uring_register": 427},
    }, 56, 435),
    "aarch64": (0xC00000B7, {
        "programs": {"execve": 221, "execveat": 281},
        "processes": {},  # no fork/vfork here: clone does both
        "signal": {"kill": 129, "tkill": 130, "tgkill": 131, "rt_sigqueueinfo": 138,
                   "rt_tgsigqueueinfo": 240, "pidfd_send_signal": 424},
        "other processes": {"ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271},
        "escape": {"unshare": 97, "setns": 268, "bpf": 280, "perf_event_open": 241,
                   "userfaultfd": 282, "io_uring_setup": 425, "io_uring_enter": 426,
                   "io_uring_register": 427},
    }, 220, 435),
}
# Two filters, because installing one costs time in proportion to its length (the kernel
# compiles it: ~4.5 us per instruction here, 446 us for the whole list, paid by every child).
# The supervisor installs the first once, on itself, after its imports: it has no use for
# these calls either, and every child inherits it for free. Each child then adds the second:
# the calls its supervisor still needs (fork, to start children; kill, to end them).
SUPERVISOR_GROUPS = ("programs", "other processes", "escape")
CHILD_GROUPS = ("processes", "signal")
ARCH = platform.machine()


class SeccompUnavailable(RuntimeError):
    pass


def _arch():
    try:
        return _ARCHES[ARCH]
    except KeyError:
        raise SeccompUnavailable(f"no seccomp filter for architecture {ARCH!r} (x86_64 and aarch64 only)") from None


def program(groups: tuple[str, ...]) -> bytes:
    """A filter refusing the calls of `groups`, as BPF instructions (struct sock_filter: u16
    code, u8 jt, u8 jf, u32 k). The supervisor's (SUPERVISOR_GROUPS) also refuses other ABIs
    and answers clone3 with ENOSYS; a child's (CHILD_GROUPS) relies on it for both, and
    lets `clone` through only for threads."""
    audit_arch, numbers, clone_nr, clone3_nr = _arch()
    denied = sorted(nr for group in groups for nr in numbers[group].values())
    supervisor = groups == SUPERVISOR_GROUPS
    # (code, k, where to jump when true: a label, or None to fall through); jumps are
    # relative and forward only, so the returns they aim at come last.
    code: list[tuple[int | str, int, str | None]] = [
        (_LD_W_ABS, _ARCH, None),
        (_JEQ_K, audit_arch, "check_nr"),
        (_RET_K, _RET_ERRNO | errno.EPERM, None),  # another ABI
        ("check_nr", 0, None),
        (_LD_W_ABS, _NR, None),
        (_JGE_K, X32_SYSCALL_BIT, "eperm"),
        (_JEQ_K, clone3_nr, "enosys"),
    ] if supervisor else [(_LD_W_ABS, _NR, None), (_JEQ_K, clone_nr, "clone")]
    code += [
        *[(_JEQ_K, nr, "eperm") for nr in denied],
        (_RET_K, _RET_ALLOW, None),
    ]
    if not supervisor:
        code += [
            ("clone", 0, None),
            (_LD_W_ABS, _ARG0, None),  # clone(flags, ...): a thread, or a process?
            (_JSET_K, CLONE_THREAD, "allow"),
        ]
    code += [("eperm", 0, None), (_RET_K, _RET_ERRNO | errno.EPERM, None)]
    if supervisor:
        code += [("enosys", 0, None), (_RET_K, _RET_ERRNO | errno.ENOSYS, None)]
    else:
        code += [("allow", 0, None), (_RET_K, _RET_ALLOW, None)]
    labels: dict[str, int] = {}
    instructions = []
    for op, k, target in code:
        if isinstance(op, str):
            labels[op] = len(instructions)
        else:
            instructions.append((op, k, target))
    return b"".join(
        struct.pack("=HBBI", op, labels[target] - i - 1 if target else 0, 0, k)
        for i, (op, k, target) in enumerate(instructions)
    )


class Filter:
    """A compiled filter, built once in the supervisor; `install()` where it applies."""

    def __init__(self, groups: tuple[str, ...]) -> None:
        code = program(groups)
        self._buffer = ctypes.create_string_buffer(code, len(code))
        prog = struct.pack("=HxxxxxxQ", len(code) // 8, ctypes.addressof(self._buffer))  # struct sock_fprog
        self._prog_buffer = ctypes.create_string_buffer(prog, len(prog))
        libc = ctypes.CDLL(None, use_errno=True)
        self._prctl, self._syscall = libc.prctl, libc.syscall
        self._prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        self._syscall.argtypes = [ctypes.c_long, ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p]

    def install(self) -> None:
        """Forbid the calls in this process and its future threads and children; irreversible.

        SPEC_ALLOW: by default the kernel also turns on its Speculative Store Bypass
        mitigation for a filtered process, which made verifiers 1.5x slower here (in-process
        exec() of the benchmark's verifiers: 0.052 s bare, 0.080 s filtered). That attack
        reads memory of its own process, which holds nothing but the verifier's inputs; a
        kernel without the flag (before 4.17) gets the filter without it."""
        if self._prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise SeccompUnavailable(f"prctl(NO_NEW_PRIVS): {_errno()}")
        prog = ctypes.addressof(self._prog_buffer)
        for flags in (SECCOMP_FILTER_FLAG_SPEC_ALLOW, 0):
            if self._syscall(SYS_SECCOMP[ARCH], SECCOMP_SET_MODE_FILTER, flags, prog) == 0:
                return
            if ctypes.get_errno() != errno.EINVAL:
                break
        raise SeccompUnavailable(f"seccomp(SET_MODE_FILTER): {_errno()}")


def _errno() -> str:
    code = ctypes.get_errno()
    return errno.errorcode.get(code, str(code))
