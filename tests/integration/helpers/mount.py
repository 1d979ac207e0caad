"""inboxfs mounts: one daemon in the foreground per Mount, each start a
DaemonRun whose exit status and log are checked at teardown; the fuse
prerequisites and the mounts at a path."""

import contextlib
import errno
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time

import helpers   # WRAPPER is read through the package: tests patch helpers.WRAPPER
from .env import INBOXFS_BIN, TIMEOUT, Unavailable
from .procs import kernel_stacks, mounts, read_log, stop_process, wait_until


# A daemon log line matching one of these fails the test whatever the
# test says: sanitizer and valgrind reports.
SANITIZER_PATTERNS = [
    r'ERROR: AddressSanitizer',
    r'runtime error:',
    r'LeakSanitizer',
    r'WARNING: ThreadSanitizer',
    r'^==\d+== (Invalid|Conditional jump|Use of uninitialised|Syscall param'
    r'|Mismatched|Source and destination overlap)',
]
# Any other line saying "error" fails it too (libfuse's habit), unless the
# test declares it expected with Mount.allow_log(regex).
ERROR_PATTERN = r'\berror\b'


def mountinfo(path):
    """/proc/self/mountinfo entries (mount id, fstype, source) at path."""
    path = os.path.realpath(path)
    return [(m.id, m.fstype, m.source) for m in mounts() if m.point == path]


def mount_devices(path, fstype='fuse.inboxfs'):
    """The devices (major:minor) of the FSTYPE mounts at path."""
    path = os.path.realpath(path)
    return {m.dev for m in mounts() if m.point == path and m.fstype == fstype}


def foreign_holders(devices):
    """Processes of other mount namespaces than ours that have a mount of
    one of DEVICES (major:minor): a namespace made (unshare -m) while it
    was mounted holds a copy of it, and the kernel ends a FUSE connection
    only when its last mount goes. ['PID (COMM)', ...], one per namespace."""
    own = os.readlink('/proc/self/ns/mnt')
    seen, found = {own}, []
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            ns = os.readlink(f'/proc/{pid}/ns/mnt')
            if ns in seen:
                continue
            seen.add(ns)
            if any(m.dev in devices and m.fstype == 'fuse.inboxfs' for m in mounts(pid)):
                with open(f'/proc/{pid}/comm') as f:
                    found.append(f'{pid} ({f.read().strip()})')
        except OSError:
            continue    # gone meanwhile, or a kernel thread
    return found


def _answers(path):
    """True if the mount at PATH is served (statfs is never cached)."""
    try:
        os.statvfs(path)
        return True
    except OSError:
        return False


ENABLE_URING = '/sys/module/fuse/parameters/enable_uring'


@contextlib.contextmanager
def uring_param(value):
    """The fuse module's enable_uring set to VALUE for the block (true: the
    kernel offers FUSE over io_uring to new mounts, and inboxfs uses it
    unless uring=no), then the old value put back, on failure too. The
    parameter is the whole machine's. Unavailable where the kernel has no
    FUSE over io_uring."""
    try:
        with open(ENABLE_URING) as f:
            old = f.read().strip()
    except OSError as e:
        raise Unavailable(f'this kernel has no FUSE over io_uring ({e})')
    try:
        with open(ENABLE_URING, 'w') as f:
            f.write('1' if value else '0')
        yield
    finally:
        with open(ENABLE_URING, 'w') as f:
            f.write('1' if old in ('Y', '1') else '0')


def fuse_prerequisites():
    """Why integration mounts cannot run here, or None."""
    if not os.path.exists('/dev/fuse'):
        return '/dev/fuse is missing'
    if not shutil.which('fusermount3'):
        return 'fusermount3 is missing (apt-get install fuse3)'
    if not INBOXFS_BIN:
        return 'INBOXFS_BIN is not set (run through meson test or tools/test)'
    if not os.access(INBOXFS_BIN, os.X_OK):
        return f'INBOXFS_BIN={INBOXFS_BIN} is not an executable'
    if os.geteuid() != 0:
        return 'integration tests run as root (client uids, Samba)'
    return None


def format_options(opts):
    """{'sync': 'none', 'debug_x': True} -> 'sync=none,debug_x'."""
    parts = []
    for key, value in opts.items():
        if value is None or value is False:
            continue
        parts.append(key if value is True else f'{key}={value}')
    return ','.join(parts)


class DaemonRun:
    """One start of the daemon: its process, its log, what exit is expected
    (a test that makes the daemon fail sets expected_status)."""

    def __init__(self, proc, log_path, argv):
        self.proc = proc
        self.log_path = log_path
        self.argv = argv
        self.expected_status = 0
        self.reported = False

    def log(self):
        return read_log(self.log_path)


class Mount:
    """An inboxfs daemon in the foreground over INBOX, mounted on MNT.

    `inbox` is the backing directory (what the consumer sees without the
    mount), `mnt` the mount point. Both are plain strings; use
    os.path.join or pathlib as you like."""

    def __init__(self, base, inbox, mnt, opts=None, debug=False, args=()):
        self.base = base
        self.inbox = inbox
        self.mnt = mnt
        self.opts = dict(opts or {})
        self.debug = debug
        self.args = list(args)
        self.runs = []
        # libfuse's -d trace prints every errno reply as "error: -2 (...)".
        self.allowed = [re.compile(r'^\s*unique: \d+, error: ')] if debug else []

    # -- life cycle

    def argv(self):
        argv = helpers.WRAPPER + [INBOXFS_BIN, '-f']
        if self.debug:
            argv.append('-d')
        options = format_options({**helpers.DEFAULT_OPTS, **self.opts})
        if options:
            argv += ['-o', options]
        return argv + self.args + [self.inbox, self.mnt]

    def start(self, wait=True, timeout=TIMEOUT):
        """Start the daemon; with wait, return once it has mounted (a new
        mount: a stale one left by a crash does not count)."""
        before = {m[0] for m in mountinfo(self.mnt)}
        log_path = os.path.join(self.base, f'inboxfs-{len(self.runs) + 1}.log')
        argv = self.argv()
        with open(log_path, 'wb') as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, cwd=self.base)
        run = DaemonRun(proc, log_path, argv)
        self.runs.append(run)
        if wait:
            self.wait_mounted(before, timeout)
        return self

    @property
    def run(self):
        return self.runs[-1] if self.runs else None

    @property
    def pid(self):
        return self.run.proc.pid

    def wait_mounted(self, before=(), timeout=TIMEOUT):
        run = self.run
        deadline = time.monotonic() + timeout
        while True:
            entries = mountinfo(self.mnt)
            fresh = [m for m in entries if m[0] not in before]
            if any(m[1] == 'fuse.inboxfs' for m in fresh):
                return
            # After a crash the kernel may give the new mount the id of the
            # stale one it replaces: then a live answer is what tells.
            if entries and entries[-1][1] == 'fuse.inboxfs' and _answers(self.mnt):
                return
            status = run.proc.poll()
            if status is not None:
                run.reported = True   # here, with its log: not again at teardown
                raise AssertionError(
                    f'inboxfs exited with status {status} before mounting\n'
                    f'$ {shlex.join(run.argv)}\n{run.log()}')
            if time.monotonic() > deadline:
                seen = ', '.join(f'{m[1]} from {m[2]}' for m in fresh) or 'nothing'
                raise AssertionError(
                    f'inboxfs did not mount on {self.mnt} within {timeout:.0f}s '
                    f'(expected fstype fuse.inboxfs, found {seen})\n{run.log()}')
            time.sleep(0.02)

    def mounted(self):
        """Is a (live or stale) inboxfs mounted on mnt?"""
        return any(m[1] == 'fuse.inboxfs' for m in mountinfo(self.mnt))

    def unmount(self, timeout=TIMEOUT):
        """Unmount (lazily as a last resort), wait for the daemon, stop it by
        pid if it lingers; then check its exit status and log."""
        problems = []
        devices = mount_devices(self.mnt)
        # A crash may have left a stale mount under the live one.
        for _ in range(3):
            if not self.mounted():
                break
            proc = subprocess.run(['fusermount3', '-u', self.mnt],
                                  stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, timeout=timeout)
            if proc.returncode != 0:
                problems.append(f'fusermount3 -u failed: {proc.stderr.strip()}')
                subprocess.run(['fusermount3', '-u', '-z', self.mnt],
                               stdin=subprocess.DEVNULL, capture_output=True,
                               timeout=timeout)
        run = self.run
        if run and run.proc.poll() is None:
            held = self._wait_exit(run, devices, timeout)
            if held:
                # Unmounted here, but another mount namespace (another
                # test's unshare -m) has a copy of the mount: the kernel
                # ends the connection only with the last one, so the
                # daemon cannot know. A clean stop, as systemctl's.
                print(f'inboxfs: {self.mnt} still mounted in the namespace of {held}: '
                      'stopped by SIGTERM')
                stop_process(run.proc, timeout)
            elif run.proc.poll() is None:
                problems.append('inboxfs did not exit after unmount; terminated')
                stop_process(run.proc, timeout)
        problems += self.check()
        if problems:
            raise AssertionError('\n'.join(problems) + '\n' + self.logs())

    stop = unmount

    @staticmethod
    def _wait_exit(run, devices, timeout):
        """Wait for the daemon to exit after its unmount; return early with
        the processes of other mount namespaces that still have the mount
        (foreign_holders()), if any."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                run.proc.wait(timeout=0.5)
                return []
            except subprocess.TimeoutExpired:
                pass
            held = foreign_holders(devices) if devices else []
            if held:
                return held
        return []

    def restart(self, timeout=TIMEOUT, **opts):
        """Unmount cleanly and mount again over the same inbox; keyword
        arguments change options (None removes one)."""
        self.unmount(timeout)
        self.opts.update(opts)
        return self.start(timeout=timeout)

    def crash(self, sig=signal.SIGKILL, timeout=TIMEOUT, wedged_ok=False):
        """Kill the daemon (by its pid) and leave its mount behind, stale,
        as a crash would. recover() then runs a new daemon over the stale
        mount (which it must clean up); restart() unmounts it first.

        A daemon that does not die within TIMEOUT (a thread stuck in the
        kernel keeps its /dev/fuse descriptor open, so the kernel never
        aborts the connection and every client waiting on the mount hangs
        for good) is freed by aborting the connection by hand, so that the
        test can go on; that diagnosis fails the test, or is returned with
        wedged_ok. Returns None when the daemon died of the signal."""
        run = self.run
        run.expected_status = -sig
        run.proc.send_signal(sig)
        try:
            run.proc.wait(timeout=timeout)
            return None
        except subprocess.TimeoutExpired:
            pass
        stacks = kernel_stacks(run.proc.pid)
        done = abort_fuse(self.mnt)
        try:
            run.proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(f'the killed daemon (pid {run.proc.pid}) cannot die: '
                                 f'{stacks}; {done}')
        wedge = (f'the killed daemon (pid {run.proc.pid}) did not die within {timeout}s: '
                 f'a thread stuck in the kernel held the FUSE device open, so the connection '
                 f'was never aborted and the mount and its clients hung until the test '
                 f'aborted it by hand (threads: {stacks})')
        if not wedged_ok:
            raise AssertionError(wedge)
        return wedge

    def recover(self, timeout=TIMEOUT):
        """Start a new daemon over the stale mount a crash left and wait
        until a live inboxfs mount answers there; returns how long that
        took. (start()'s wait looks for a mount id it has not seen, but the
        kernel often hands the detached stale mount's id to the new mount.
        Here the mountpoint itself is asked: a stale mount answers statfs
        with ENOTCONN, and what answers must be an inboxfs mount, not the
        plain directory seen between the detach and the new mount.) A
        start that exits or hangs is diagnosed."""
        began = time.monotonic()
        self.start(wait=False)
        run = self.run

        def live():
            if run.proc.poll() is not None:
                run.reported = True   # here, with its log: not again at teardown
                raise AssertionError(f'inboxfs exited with {run.proc.returncode} over the '
                                     f'stale mount\n{run.log()}')
            try:
                # statfs always reaches the daemon (stat may be answered
                # from the kernel's attribute cache, even on a dead mount);
                # then the object there must be an inboxfs root.
                os.statvfs(self.mnt)
                st = os.stat(self.mnt)
            except OSError as e:
                # ECONNABORTED, ECANCELED: a request that came while the
                # kernel tore down the dead daemon's io_uring queues.
                if e.errno in (errno.ENOTCONN, errno.ECONNABORTED,
                               errno.ECANCELED):
                    return False
                raise
            dev = f'{os.major(st.st_dev)}:{os.minor(st.st_dev)}'
            return dev in mount_devices(self.mnt)

        try:
            wait_until(live, timeout, what=f'a live mount on {self.mnt}')
        except TimeoutError as e:
            e.add_note(f'the new daemon (pid {run.proc.pid}) is at: '
                       f'{kernel_stacks(run.proc.pid)}\n{run.log()}')
            raise
        return time.monotonic() - began

    # -- checks

    def allow_log(self, regex):
        """Declare a daemon log line containing 'error' expected."""
        self.allowed.append(re.compile(regex))

    def check(self):
        """Problems with every run so far: exit statuses, log contents."""
        problems = []
        for n, run in enumerate(self.runs, 1):
            if run.reported:
                continue
            status = run.proc.poll()
            if status is not None and status != run.expected_status:
                problems.append(f'inboxfs run {n} exited with status {status}, '
                                f'expected {run.expected_status}')
            for line in run.log().splitlines():
                if any(re.search(p, line) for p in SANITIZER_PATTERNS):
                    problems.append(f'inboxfs run {n}: sanitizer report: {line}')
                elif (re.search(ERROR_PATTERN, line, re.IGNORECASE)
                      and not any(a.search(line) for a in self.allowed)):
                    problems.append(f'inboxfs run {n} logged an error: {line}')
        return problems

    def logs(self):
        return '\n'.join(f'--- {run.log_path} ($ {shlex.join(run.argv)})\n{run.log()}'
                         for run in self.runs)

    def log(self):
        """The current run's log so far."""
        return self.run.log() if self.run else ''

    # -- conveniences

    def backing_files(self, sub=''):
        """Regular files in the backing inbox (or a subdirectory), staging
        excluded: what the consumer would pick up."""
        top = os.path.join(self.inbox, sub)
        return sorted(e.name for e in os.scandir(top)
                      if e.is_file(follow_symlinks=False) and e.name != '.inboxfs')

    def cleanup(self):
        """Teardown: always leave nothing mounted and no daemon running."""
        try:
            if self.runs and (self.mounted() or self.run.proc.poll() is None):
                self.unmount()
            else:
                problems = self.check()
                if problems:
                    raise AssertionError('\n'.join(problems) + '\n' + self.logs())
        finally:
            for run in self.runs:
                if run.proc.poll() is None:
                    stop_process(run.proc)
            if self.mounted():
                subprocess.run(['fusermount3', '-u', '-z', self.mnt],
                               stdin=subprocess.DEVNULL, capture_output=True,
                               timeout=TIMEOUT)


def run_inboxfs(*args, timeout=TIMEOUT, **kw):
    """Run the daemon to completion (bad-input tests): CompletedProcess
    with text stdout/stderr."""
    return subprocess.run(helpers.WRAPPER + [INBOXFS_BIN] + [str(a) for a in args],
                          stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout, **kw)


def fuse_connection(mnt):
    """The FUSE connection number (the device minor) of the top mount at mnt."""
    # No realpath(): a stat of a wedged mount never returns.
    found = [m for m in mounts() if m.point == mnt and m.fstype == 'fuse.inboxfs']
    return int(found[-1].dev.split(':')[1]) if found else None


def abort_fuse(mnt):
    """Abort the FUSE connection of the mount at mnt (fusectl), as the
    kernel does when the daemon's last /dev/fuse descriptor closes: every
    request waiting on it fails with ENOTCONN. Returns what was done."""
    conn = fuse_connection(mnt)
    if conn is None:
        return 'no fuse.inboxfs mount there'
    ctl = tempfile.mkdtemp(prefix='fusectl-')
    try:
        subprocess.run(['mount', '-t', 'fusectl', 'none', ctl], check=True,
                       capture_output=True, timeout=TIMEOUT)
        try:
            with open(os.path.join(ctl, str(conn), 'abort'), 'w') as f:
                f.write('1')
        finally:
            subprocess.run(['umount', ctl], capture_output=True, timeout=TIMEOUT)
        return f'aborted FUSE connection {conn}'
    except (OSError, subprocess.SubprocessError) as e:
        return f'could not abort FUSE connection {conn}: {e}'
    finally:
        os.rmdir(ctl)


def reap_all(pids, timeout=TIMEOUT, mnt=None):
    """Wait for our forked children; SIGKILL (by pid) those that linger.
    Children stuck in the kernel on a wedged FUSE mount are freed by
    aborting its connection. Returns ({pid: wait status}, problems)."""
    status, problems = {}, []
    left = set(pids)

    def collect(until):
        while left:
            for pid in list(left):
                done, st = os.waitpid(pid, os.WNOHANG)
                if done:
                    status[pid] = st
                    left.discard(pid)
            if not left or time.monotonic() > until:
                return
            time.sleep(0.02)

    collect(time.monotonic() + timeout)
    if left:
        problems.append(f'children {sorted(left)} did not finish within {timeout:.0f}s: '
                        f'{ {p: kernel_stacks(p) for p in left} }')
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        collect(time.monotonic() + TIMEOUT)
    if left and mnt is not None:
        problems.append(abort_fuse(mnt))
        collect(time.monotonic() + TIMEOUT)
    for pid in left:                       # nothing more we can do: never hang
        problems.append(f'child {pid} is unkillable: {kernel_stacks(pid)}')
    return status, problems
