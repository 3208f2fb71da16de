"""The device allow-list on cgroup v2: a ``BPF_PROG_TYPE_CGROUP_DEVICE`` program built from rules.

cgroup v2 has no ``devices.allow``/``devices.deny``. The kernel instead runs the eBPF programs
attached to a cgroup (and to its ancestors) on every device open and mknod, and refuses the
access unless every program returns 1. We build such a program from the same ``DeviceRule`` list
the v1 files take, so both versions enforce one policy:

1. ``effective_rules`` replays the list with the v1 kernel's semantics
   (``security/device_cgroup.c``): an ``a`` rule sets the default (allow or deny) and drops
   every exception; a rule of the other polarity than the default adds an exception (merging
   access bits into an exact match); a rule of the same polarity takes its access bits away
   from an exactly matching exception.
2. ``assemble`` turns the default plus exceptions into eBPF instructions, hand-encoded: load the
   device type, access, major and minor from ``struct bpf_cgroup_dev_ctx``, compare them with each
   exception in turn, and return its verdict on the first match or the default at the end. An
   allowing exception must cover the whole requested access (v1's ``match_exception``); a denying
   one matches on any overlap (``match_exception_partial``).
3. ``attach`` loads the program with bpf(2) and attaches it to the cgroup directory with
   ``BPF_F_ALLOW_MULTI``; the attachment lives as long as the cgroup, so the program fd is closed
   at once. ``detach_all`` takes every device program off a cgroup again (on remove and before a
   re-create). Failures raise ``NotSupported``: the daemon must then refuse the container.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import platform
import struct
from collections.abc import Iterable
from typing import Final

from drivers.exec.spec import DeviceRule
from engine.errors import InvalidArgument, NotSupported

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_NR_BPF: Final = {"x86_64": 321, "aarch64": 280}.get(platform.machine(), 321)

# linux/bpf.h
BPF_PROG_LOAD: Final = 5
BPF_PROG_ATTACH: Final = 8
BPF_PROG_DETACH: Final = 9
BPF_PROG_GET_FD_BY_ID: Final = 13
BPF_PROG_QUERY: Final = 16
BPF_PROG_TYPE_CGROUP_DEVICE: Final = 15
BPF_CGROUP_DEVICE: Final = 6  # attach type
BPF_F_ALLOW_MULTI: Final = 2
DEV_TYPE: Final = {"b": 1, "c": 2}  # BPF_DEVCG_DEV_*
ACCESS: Final = {"m": 1, "r": 2, "w": 4}  # BPF_DEVCG_ACC_*
_ATTR_SIZE: Final = 128
_LICENSE: Final = b"Apache-2.0"  # no GPL-only helpers are called

# Opcodes (class | op | source) and registers used by the program.
LDXW: Final = 0x61  # dst = *(u32 *)(src + off)
AND_K: Final = 0x57  # dst &= imm (64-bit ALU)
RSH_K: Final = 0x77  # dst >>= imm
MOV_K: Final = 0xB7  # dst = imm
MOV_X: Final = 0xBF  # dst = src
JNE_K: Final = 0x55  # if dst != imm: pc += off
JNE_X: Final = 0x5D  # if dst != src: pc += off
JEQ_K: Final = 0x15  # if dst == imm: pc += off
EXIT: Final = 0x95
R0, R1, R2, R3, R4, R5 = range(6)  # r1 = ctx; r2 type, r3 access, r4 major, r5 minor


def insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    """Encode one ``struct bpf_insn`` (little-endian: dst in the low nibble)."""
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def _access(text: str, rule: DeviceRule) -> str:
    if not text or set(text) - set("rwm"):
        raise InvalidArgument(f"DeviceRule {rule}: access must be made of r, w and m")
    return "".join(c for c in "rwm" if c in text)


def effective_rules(rules: Iterable[DeviceRule]) -> tuple[bool, tuple[DeviceRule, ...]]:
    """Replay *rules* with cgroup v1 semantics; return (default allow, exceptions in order)."""
    default_allow, exceptions = True, list[DeviceRule]()  # a new v1 cgroup under root allows all
    for rule in rules:
        if rule.type not in ("a", "b", "c"):
            raise InvalidArgument(f"DeviceRule {rule}: type must be a, b or c")
        access = _access(rule.access, rule)
        if rule.type == "a":
            default_allow, exceptions = rule.allow, []
            continue
        key = (rule.type, rule.major, rule.minor)
        same = [i for i, ex in enumerate(exceptions) if (ex.type, ex.major, ex.minor) == key]
        if rule.allow == default_allow:  # take the access away from an exact match
            for i in same:
                left = "".join(c for c in exceptions[i].access if c not in access)
                exceptions[i] = DeviceRule(not default_allow, *key, left)
            exceptions = [ex for ex in exceptions if ex.access]
        elif same:
            merged = _access(exceptions[same[0]].access + access, rule)
            exceptions[same[0]] = DeviceRule(not default_allow, *key, merged)
        else:
            exceptions.append(DeviceRule(not default_allow, *key, access))
    return default_allow, tuple(exceptions)


def _block(ex: DeviceRule) -> bytes:
    """The instructions testing one exception; each failed test jumps past the block."""
    # (code, dst, src, imm, is_jump); jump offsets are filled in once the length is known
    items = [(JNE_K, R2, 0, DEV_TYPE[ex.type], True)]
    mask = sum(ACCESS[c] for c in ex.access)
    if mask != 7:
        items += [(MOV_X, R1, R3, 0, False), (AND_K, R1, 0, mask, False)]
        # allow: every requested bit must be in the rule; deny: any shared bit matches
        items.append((JNE_X, R1, R3, 0, True) if ex.allow else (JEQ_K, R1, 0, 0, True))
    if ex.major >= 0:
        items.append((JNE_K, R4, 0, ex.major, True))
    if ex.minor >= 0:
        items.append((JNE_K, R5, 0, ex.minor, True))
    items += [(MOV_K, R0, 0, int(ex.allow), False), (EXIT, 0, 0, 0, False)]
    n = len(items)
    return b"".join(
        insn(code, dst, src, n - i - 1 if jump else 0, imm)
        for i, (code, dst, src, imm, jump) in enumerate(items)
    )


def assemble(rules: Iterable[DeviceRule]) -> bytes:
    """Build the program's instructions for *rules* (deterministic bytes, 8 per instruction)."""
    default_allow, exceptions = effective_rules(rules)
    prologue = (
        insn(LDXW, R2, R1, 0)
        + insn(AND_K, R2, imm=0xFFFF)
        + insn(LDXW, R3, R1, 0)
        + insn(RSH_K, R3, imm=16)
        + insn(LDXW, R4, R1, 4)
        + insn(LDXW, R5, R1, 8)
    )
    body = b"".join(_block(ex) for ex in exceptions)
    return prologue + body + insn(MOV_K, R0, imm=int(default_allow)) + insn(EXIT)


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char], what: str) -> int:
    result = int(_libc.syscall(ctypes.c_long(_NR_BPF), ctypes.c_int(cmd), attr,
                               ctypes.c_uint(len(attr))))  # fmt: skip
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bpf({what}): {os.strerror(err)}")
    return result


def load(program: bytes) -> int:
    """Load *program* as a cgroup device program; return its fd (OSError with the verifier log)."""
    code = ctypes.create_string_buffer(program, len(program))
    lic = ctypes.create_string_buffer(_LICENSE)
    for log_size in (0, 1 << 16):  # the second try only to get the verifier's explanation
        log = ctypes.create_string_buffer(max(log_size, 1))
        attr = ctypes.create_string_buffer(_ATTR_SIZE)
        struct.pack_into(
            "<IIQQIIQII16sII", attr, 0, BPF_PROG_TYPE_CGROUP_DEVICE, len(program) // 8,
            ctypes.addressof(code), ctypes.addressof(lic), int(log_size > 0), log_size,
            ctypes.addressof(log) if log_size else 0, 0, 0, b"dockyard_dev", 0, BPF_CGROUP_DEVICE,
        )  # fmt: skip
        try:
            return _bpf(BPF_PROG_LOAD, attr, "BPF_PROG_LOAD")
        except OSError as exc:
            if log_size or exc.errno not in (errno.EACCES, errno.EINVAL):
                verifier = log.value.decode(errors="replace").strip()
                if verifier:
                    exc.strerror = f"{exc.strerror}; verifier: {verifier.splitlines()[-1]}"
                raise
    raise AssertionError("unreachable")


def attached(cgroup_dir: str) -> list[int]:
    """The ids of the device programs attached directly to *cgroup_dir*."""
    fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        ids = (ctypes.c_uint32 * 64)()
        attr = ctypes.create_string_buffer(_ATTR_SIZE)
        struct.pack_into("<IIIIQI", attr, 0, fd, BPF_CGROUP_DEVICE, 0, 0,
                         ctypes.addressof(ids), len(ids))  # fmt: skip
        _bpf(BPF_PROG_QUERY, attr, "BPF_PROG_QUERY")
        (count,) = struct.unpack_from("<I", attr, 24)
        return list(ids[: min(count, len(ids))])
    finally:
        os.close(fd)


def _attach_cmd(cmd: int, cgroup_fd: int, prog_fd: int, flags: int, what: str) -> None:
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into("<IIII", attr, 0, cgroup_fd, prog_fd, BPF_CGROUP_DEVICE, flags)
    _bpf(cmd, attr, what)


def detach_all(cgroup_dir: str) -> int:
    """Detach every device program attached to *cgroup_dir*; return how many there were."""
    ids = attached(cgroup_dir)
    fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for prog_id in ids:
            attr = ctypes.create_string_buffer(_ATTR_SIZE)
            struct.pack_into("<I", attr, 0, prog_id)
            try:
                prog = _bpf(BPF_PROG_GET_FD_BY_ID, attr, "BPF_PROG_GET_FD_BY_ID")
            except FileNotFoundError:
                continue  # gone meanwhile
            try:
                _attach_cmd(BPF_PROG_DETACH, fd, prog, 0, "BPF_PROG_DETACH")
            finally:
                os.close(prog)
    finally:
        os.close(fd)
    return len(ids)


def attach(cgroup_dir: str, rules: Iterable[DeviceRule]) -> None:
    """Enforce *rules* on *cgroup_dir*, replacing earlier programs; NotSupported if impossible."""
    rules = tuple(rules)
    default_allow, exceptions = effective_rules(rules)
    if default_allow and not exceptions:  # nothing to enforce (privileged): no program needed
        with contextlib.suppress(OSError):  # a stale program left here only denies more
            detach_all(cgroup_dir)
        return
    try:
        detach_all(cgroup_dir)
        prog = load(assemble(rules))
        try:
            fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                _attach_cmd(BPF_PROG_ATTACH, fd, prog, BPF_F_ALLOW_MULTI, "BPF_PROG_ATTACH")
            finally:
                os.close(fd)
        finally:
            os.close(prog)  # the attachment keeps the program alive with the cgroup
    except OSError as exc:
        raise NotSupported(
            f"cannot enforce the device allow-list on cgroup v2: {exc.strerror} ({cgroup_dir})"
        ) from exc
