"""The jail's seccomp filter, built with libseccomp through ctypes and exported as BPF.

A deny list on top of the namespaces and the unprivileged uid: the calls below return EPERM
(clone3 returns ENOSYS so glibc falls back to clone(), whose flags can be inspected). bwrap
loads the program with `--seccomp FD` before it execs the jail's first command.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
import socket

from authops.core.errors import ConfigurationError

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_NE = 1
SCMP_CMP_MASKED_EQ = 7


def _errno_action(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


# Whole calls refused. Each one either reaches the kernel's attack surface (bpf, perf, io_uring,
# keys, userfaultfd), changes mounts or namespaces, inspects other processes, or is an admin
# operation an unprivileged uid cannot do anyway (kept here so a mistake in uid dropping is
# not the only barrier).
DENIED_SYSCALLS: tuple[str, ...] = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "mount", "umount2", "pivot_root", "chroot", "mount_setattr",
    "fsopen", "fsconfig", "fsmount", "fspick", "open_tree", "move_mount",
    "unshare", "setns",
    "keyctl", "add_key", "request_key",
    "bpf", "perf_event_open", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "reboot", "swapon", "swapoff", "acct", "quotactl", "quotactl_fd",
    "open_by_handle_at", "name_to_handle_at", "lookup_dcookie",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "sethostname", "setdomainname", "syslog", "vhangup",
    "iopl", "ioperm", "uselib", "nfsservctl", "personality",
)

# clone() flags that create namespaces: a new user namespace would hand the jailed uid
# capabilities over fresh mount/net namespaces.
CLONE_NAMESPACE_FLAGS: tuple[int, ...] = (
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
    0x00000080,  # CLONE_NEWTIME
)


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


@functools.lru_cache(maxsize=1)
def _lib() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise ConfigurationError(
            "libseccomp is missing: install the Debian package libseccomp2 (the jail's syscall "
            f"filter is built with it): {exc}") from exc
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.restype = ctypes.c_int
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(_ArgCmp)]
    lib.seccomp_export_bpf.restype = ctypes.c_int
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


def _add(lib: ctypes.CDLL, ctx: int, action: int, name: str,
         *cmps: tuple[int, int, int, int]) -> None:
    """One rule; each comparison is (argument index, operator, datum_a, datum_b)."""
    nr = lib.seccomp_syscall_resolve_name(name.encode())
    if nr < 0:  # not a syscall on this architecture (e.g. renamed in an old libseccomp)
        return
    arr = (_ArgCmp * max(len(cmps), 1))(*[_ArgCmp(*c) for c in cmps])
    rc = lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), arr)
    if rc < 0:
        raise ConfigurationError(f"libseccomp refused the rule for {name}: {os.strerror(-rc)}")


def build_filter_bpf() -> bytes:
    """The jail's seccomp program as raw BPF (struct sock_filter[]), ready for bwrap --seccomp."""
    return _cached_bpf()


@functools.lru_cache(maxsize=1)
def _cached_bpf() -> bytes:
    lib = _lib()
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    if not ctx:
        raise ConfigurationError("seccomp_init failed: libseccomp could not create a filter")
    eperm = _errno_action(errno.EPERM)
    try:
        for name in DENIED_SYSCALLS:
            _add(lib, ctx, eperm, name)
        # Sockets: only AF_UNIX (inside a fresh network namespace it reaches nothing outside).
        # This refuses AF_INET, AF_INET6, AF_NETLINK, AF_PACKET and every other family.
        _add(lib, ctx, eperm, "socket", (0, SCMP_CMP_NE, socket.AF_UNIX, 0))
        _add(lib, ctx, eperm, "socketpair", (0, SCMP_CMP_NE, socket.AF_UNIX, 0))
        for flag in CLONE_NAMESPACE_FLAGS:
            _add(lib, ctx, eperm, "clone", (0, SCMP_CMP_MASKED_EQ, flag, flag))
        # clone3 passes its flags in memory, which seccomp cannot read: say "not implemented" so
        # glibc (pthread_create, fork) falls back to clone(), filtered above.
        _add(lib, ctx, _errno_action(errno.ENOSYS), "clone3")
        # TIOCSTI (push bytes into a terminal's input): belt and braces beside --new-session.
        _add(lib, ctx, eperm, "ioctl", (1, SCMP_CMP_MASKED_EQ, 0xFFFFFFFF, 0x5412))
        fd = os.memfd_create("authops-seccomp")
        try:
            rc = lib.seccomp_export_bpf(ctx, fd)
            if rc < 0:
                raise ConfigurationError(f"seccomp_export_bpf failed: {os.strerror(-rc)}")
            os.lseek(fd, 0, os.SEEK_SET)
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)
    finally:
        lib.seccomp_release(ctx)


def filter_fd() -> int:
    """A fresh, inheritable memfd holding the BPF program, positioned at 0 (caller closes it)."""
    data = build_filter_bpf()
    fd = os.memfd_create("authops-seccomp-bpf")
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
