"""Processes: waiting with a deadline, stopping and reaping children, and
what /proc says about the daemons (process groups, open descriptors) and
the mounts (mountinfo, read here only)."""

import collections
import os
import re
import signal
import subprocess
import time

from .env import TIMEOUT


def drop_privileges(uid, gid=None):
    """In a forked child: become UID (group GID, default UID), no groups."""
    os.setgroups([])
    os.setgid(uid if gid is None else gid)
    os.setuid(uid)


def read_log(path):
    """The text of a log file, '' if it is not there (yet)."""
    try:
        with open(path, errors='replace') as f:
            return f.read()
    except OSError:
        return ''


def wait_until(predicate, timeout=TIMEOUT, interval=0.02, what='condition'):
    """Poll predicate() until it returns a true value; raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f'timed out after {timeout:.0f}s waiting for {what}')
        time.sleep(interval)


def processes():
    """{pid: (ppid, pgrp, comm)} of the live (not zombie) processes."""
    found = {}
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open(f'/proc/{entry}/stat') as f:
                data = f.read()
        except OSError:
            continue
        comm = data[data.index('(') + 1:data.rindex(')')]
        state, ppid, pgrp = data[data.rindex(')') + 2:].split()[:3]
        if state not in ('Z', 'X'):
            found[int(entry)] = (int(ppid), int(pgrp), comm)
    return found


def process_group(pgid):
    """Pids of the live (not zombie) processes in process group pgid."""
    return [pid for pid, (_ppid, pgrp, _comm) in processes().items() if pgrp == pgid]


def inboxfs_daemons(path):
    """Pids of the live inboxfs processes whose command line names PATH
    (an inbox or a mountpoint: a unique temporary path, so only ours)."""
    found = []
    for pid in processes():
        try:
            with open(f'/proc/{pid}/cmdline', 'rb') as f:
                argv = f.read().split(b'\0')
        except OSError:
            continue
        if os.path.basename(argv[0]) == b'inboxfs' and os.fsencode(path) in argv:
            found.append(pid)
    return found


def open_files(pid):
    """What process PID's descriptors point at (readlink of /proc/PID/fd,
    which never touches a mount). A descriptor closed while we look is
    skipped; a process gone gives []."""
    try:
        fds = os.listdir(f'/proc/{pid}/fd')
    except OSError:
        return []
    targets = []
    for fd in fds:
        try:
            targets.append(os.readlink(f'/proc/{pid}/fd/{fd}'))
        except OSError:
            pass
    return targets


def stop_process(proc, timeout=TIMEOUT, sig=signal.SIGTERM):
    """Signal a child we started, by its pid, then SIGKILL it if it does not
    exit in time. Returns its exit status."""
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait(timeout=timeout)


def reap(pid, timeout=TIMEOUT):
    """Wait for a child we forked; SIGKILL it if it lingers. Never blocks
    for good: a child stuck in a FUSE request is left to the teardown."""
    for sig in (None, signal.SIGKILL):
        if sig:
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
            time.sleep(0.01)


def task_ids(pid):
    try:
        return [int(t) for t in os.listdir(f'/proc/{pid}/task')]
    except FileNotFoundError:
        return []


def kernel_stacks(pid):
    """{tid: 'state: stack'} of every thread of pid, for diagnostics."""
    out = {}
    for tid in task_ids(pid):
        try:
            with open(f'/proc/{pid}/task/{tid}/status') as f:
                state = next(line.split(None, 1)[1].strip() for line in f
                             if line.startswith('State:'))
            with open(f'/proc/{pid}/task/{tid}/stack') as f:
                stack = ' < '.join(line.split()[-1].split('+')[0] for line in f)
        except (OSError, StopIteration):
            continue
        out[tid] = f'{state}: {stack}'
    return out


# One line of /proc/PID/mountinfo: the mount's id, its device (major:minor
# as a string), where it is mounted, its type and its source (both paths
# unescaped).
MountEntry = collections.namedtuple('MountEntry', 'id dev point fstype source')


def _unescape(field):
    """mountinfo writes space, tab, newline and backslash as \\ooo."""
    return re.sub(r'\\([0-7]{3})', lambda m: chr(int(m.group(1), 8)), field)


def mounts(pid='self'):
    """The mounts PID sees, in mountinfo's order (the top one at a point
    last). Raises OSError if the process is gone."""
    found = []
    with open(f'/proc/{pid}/mountinfo') as f:
        for line in f:
            left, _, right = line.partition(' - ')
            fields, (fstype, source) = left.split(), right.split()[:2]
            found.append(MountEntry(int(fields[0]), fields[2], _unescape(fields[4]), fstype,
                                    _unescape(source)))
    return found


def mounted_under(path):
    """The mount points at PATH or beneath it (a directory that has one must
    not be removed recursively: rmtree would go into the mount)."""
    path = os.path.realpath(path)
    return [m.point for m in mounts() if m.point == path or m.point.startswith(path + '/')]
