"""Machinery for the integration tests: inboxfs mounts, client uids, a
private Samba server. Fixtures in conftest.py wrap these; tests may import
the constants and classes directly (`from helpers import ...`)."""

import os
import pickle
import pwd
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import traceback

SOURCE = os.environ.get(
    'INBOXFS_SOURCE',
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
INBOXFS_BIN = os.environ.get('INBOXFS_BIN', '')
LONG = os.environ.get('INBOXFS_LONG', '') not in ('', '0')

# INBOXFS_WRAPPER runs the daemon under a tool, e.g. "valgrind -q
# --error-exitcode=99"; everything then takes longer.
WRAPPER = shlex.split(os.environ.get('INBOXFS_WRAPPER', ''))
TIMEOUT = 10.0 * (10 if WRAPPER else 1)

# INBOXFS_OPTS="passthrough=yes,...": options every mount gets unless its
# test sets them (to run the suite with a feature on).
DEFAULT_OPTS = dict(o.split('=', 1) if '=' in o else (o, True)
                    for o in os.environ.get('INBOXFS_OPTS', '').split(',') if o)

# Uids without a passwd entry, far from system and login accounts.
CLIENT_UID = 60001
OBSERVER_UID = 0

SMB_FORCE_USER = 'inboxfs-smb'   # tools/smb.conf: force user
SMB_USER = 'inboxtest'
SMB_PASSWORD = 'inboxtest'
SMB_SHARE = 'inbox'

STATUS_SUCCESS = 0
STATUS_OBJECT_NAME_COLLISION = 0xC0000035

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


def errno_of(fn, *args, **kw):
    """0 if fn(*args) succeeds, else the errno it failed with."""
    try:
        fn(*args, **kw)
        return 0
    except OSError as e:
        return e.errno


def create_excl(path, data):
    """A legacy client's create-new: O_CREAT|O_EXCL, all of DATA, close.
    Returns the writer's pid, as the daemon logs it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    return os.getpid()


def inbox_contents(inbox, sub=''):
    """{name: bytes} of the regular files of a backing inbox (or of its
    subdirectory SUB), staging excluded: what the consumer would pick up."""
    found = {}
    for entry in os.scandir(os.path.join(inbox, sub)):
        if entry.is_file(follow_symlinks=False) and entry.name != '.inboxfs':
            with open(entry.path, 'rb') as f:
                found[entry.name] = f.read()
    return found


def staged(inbox, acked=False):
    """Names of the drops in the default staging directory of INBOX: being
    written (d.*), and with ACKED those acknowledged but not yet published
    (a.*) too."""
    kinds = ('d.', 'a.') if acked else ('d.',)
    return sorted(n for n in os.listdir(os.path.join(inbox, '.inboxfs')) if n[:2] in kinds)


def incomplete(inbox):
    """{name: bytes} of the drops quarantined in INBOX/.inboxfs/incomplete."""
    top = os.path.join(inbox, '.inboxfs', 'incomplete')
    found = {}
    for name in sorted(os.listdir(top)):
        with open(os.path.join(top, name), 'rb') as f:
            found[name] = f.read()
    return found


def xattr_64k_supported(directory):
    """Does DIRECTORY's filesystem take a 64 KiB user.* value?"""
    probe = os.path.join(directory, '.xattr-probe')
    with open(probe, 'wb'):
        pass
    try:
        os.setxattr(probe, 'user.big', b'v' * 65536)
        return True
    except OSError:
        return False
    finally:
        os.unlink(probe)


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


def make_base_dir(prefix):
    """A fresh directory that client uids and smbd's force user can
    traverse (pytest's own tmp dirs are 0700)."""
    base = tempfile.mkdtemp(prefix=prefix, dir=os.environ.get('INBOXFS_TMPDIR'))
    os.chmod(base, 0o755)
    return base


def ensure_system_user(name):
    """Create a locked system account (and group) of that name once."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    for _ in range(10):
        proc = subprocess.run(
            ['useradd', '--system', '--user-group', '--no-create-home',
             '--home-dir', '/nonexistent', '--shell', '/usr/sbin/nologin', name],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        # 9: another process created it meanwhile; 1, 10: passwd or group
        # file locked by another useradd, so try again.
        if proc.returncode in (0, 9):
            return pwd.getpwnam(name)
        if proc.returncode not in (1, 10):
            break
        time.sleep(0.5)
    raise RuntimeError(f'useradd {name} failed: {proc.stderr.strip()}')


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- processes

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


# ------------------------------------------------------------------- mounts

def mountinfo(path):
    """/proc/self/mountinfo entries (mount id, fstype, source) at path."""
    path = os.path.realpath(path)
    found = []
    with open('/proc/self/mountinfo') as f:
        for line in f:
            left, _, right = line.partition(' - ')
            fields = left.split()
            point = re.sub(r'\\([0-7]{3})', lambda m: chr(int(m.group(1), 8)), fields[4])
            if point == path:
                fstype, source = right.split()[:2]
                found.append((int(fields[0]), fstype, source))
    return found


def _answers(path):
    """True if the mount at PATH is served (statfs is never cached)."""
    try:
        os.statvfs(path)
        return True
    except OSError:
        return False


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
        argv = WRAPPER + [INBOXFS_BIN, '-f']
        if self.debug:
            argv.append('-d')
        options = format_options({**DEFAULT_OPTS, **self.opts})
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
            try:
                run.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                problems.append('inboxfs did not exit after unmount; terminated')
                stop_process(run.proc, timeout)
        problems += self.check()
        if problems:
            raise AssertionError('\n'.join(problems) + '\n' + self.logs())

    stop = unmount

    def restart(self, timeout=TIMEOUT, **opts):
        """Unmount cleanly and mount again over the same inbox; keyword
        arguments change options (None removes one)."""
        self.unmount(timeout)
        self.opts.update(opts)
        return self.start(timeout=timeout)

    def crash(self, sig=signal.SIGKILL, timeout=TIMEOUT):
        """Kill the daemon (by its pid) and leave its mount behind, stale,
        as a crash would. start() then runs a new daemon over the stale
        mount (which it must clean up); restart() unmounts it first."""
        run = self.run
        run.expected_status = -sig
        run.proc.send_signal(sig)
        run.proc.wait(timeout=timeout)

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
    return subprocess.run(WRAPPER + [INBOXFS_BIN] + [str(a) for a in args],
                          stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout, **kw)


# ------------------------------------------------------------------ clients

class Client:
    """A non-root requester. Each command or call is its own process, hence
    its own inboxfs session; use session() to keep one session alive."""

    def __init__(self, uid=CLIENT_UID, gid=None):
        self.uid = uid
        self.gid = uid if gid is None else gid

    def _drop(self):
        os.setgroups([])
        os.setgid(self.gid)
        os.setuid(self.uid)

    def run(self, cmd, timeout=TIMEOUT * 3, check=False, **kw):
        """subprocess.run as this uid (a string runs under sh -c)."""
        if isinstance(cmd, str):
            cmd = ['/bin/sh', '-c', cmd]
        kw.setdefault('stdin', subprocess.DEVNULL)
        kw.setdefault('capture_output', True)
        return subprocess.run(cmd, preexec_fn=self._drop, timeout=timeout,
                              check=check, **kw)

    def popen(self, cmd, **kw):
        if isinstance(cmd, str):
            cmd = ['/bin/sh', '-c', cmd]
        kw.setdefault('stdin', subprocess.DEVNULL)
        return subprocess.Popen(cmd, preexec_fn=self._drop, **kw)

    def call(self, fn, *args, timeout=TIMEOUT * 3, **kwargs):
        """fn(*args, **kwargs) in a forked child running as this uid; its
        result is returned, its exception raised here (closures work)."""
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:   # never return into pytest from the child
                os.close(read_fd)
                try:
                    self._drop()
                    reply = ('ok', fn(*args, **kwargs))
                except BaseException as e:  # noqa: B902 - report everything
                    reply = ('err', e, traceback.format_exc())
                _send(write_fd, reply)
            finally:
                os._exit(0)
        os.close(write_fd)
        try:
            reply = _receive(read_fd, timeout, pid)
        finally:
            os.close(read_fd)
            _reap(pid)
        return _unpack(reply)

    def session(self):
        return ClientSession(self)


class ClientSession:
    """One long-lived process running as a client uid: one inboxfs session
    whose open descriptors survive between calls.

        s = client.session()
        fd = s.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        s.write(fd, b'data'); s.close(fd); s.listdir(mnt)

    Any os.* function works by name; s.call(fn, ...) runs a module-level
    (picklable) function in it. Errors are raised here with their errno.
    s.end() ends the session (the process exits)."""

    def __init__(self, client):
        self.client = client
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            try:
                # Other sessions' pipe ends too: each session must see EOF
                # when its own parent end closes.
                for fd in map(int, os.listdir('/proc/self/fd')):
                    if fd > 2 and fd not in (to_child_r, from_child_w):
                        try:
                            os.close(fd)
                        except OSError:
                            pass
                client._drop()
                _serve(to_child_r, from_child_w)
            finally:
                os._exit(0)
        os.close(to_child_r)
        os.close(from_child_w)

    def call(self, fn, *args, timeout=TIMEOUT * 3, **kwargs):
        if self.pid is None:
            raise RuntimeError('client session is closed')
        _send(self._to_child, (fn, args, kwargs))
        try:
            return _unpack(_receive(self._from_child, timeout, self.pid))
        except (TimeoutError, EOFError):
            self.end()
            raise

    def __getattr__(self, name):
        if name.startswith('_') or not callable(getattr(os, name, None)):
            raise AttributeError(name)
        return lambda *args, **kw: self.call(name, *args, **kw)

    def end(self):
        """End the session: the process exits (its descriptors close)."""
        if self.pid is None:
            return
        for fd in (self._to_child, self._from_child):
            os.close(fd)
        pid, self.pid = self.pid, None
        _reap(pid)


def _serve(rfd, wfd):
    while True:
        try:
            fn, args, kwargs = _receive(rfd, None, None)
        except EOFError:
            return
        try:
            func = getattr(os, fn) if isinstance(fn, str) else fn
            reply = ('ok', func(*args, **kwargs))
        except BaseException as e:  # noqa: B902
            reply = ('err', e, traceback.format_exc())
        _send(wfd, reply)


def _send(fd, obj):
    try:
        data = pickle.dumps(obj)
    except Exception:  # unpicklable result or exception
        data = pickle.dumps(('err', RuntimeError(repr(obj)[:2000]), ''))
    data = len(data).to_bytes(8, 'little') + data
    while data:
        data = data[os.write(fd, data):]


def _receive(fd, timeout, pid):
    deadline = None if timeout is None else time.monotonic() + timeout

    def read(n):
        buf = b''
        while len(buf) < n:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([fd], [], [], left)[0]:
                    raise TimeoutError(f'client process {pid} did not answer '
                                       f'within {timeout:.0f}s')
            chunk = os.read(fd, n - len(buf))
            if not chunk:
                raise EOFError(f'client process {pid} died')
            buf += chunk
        return buf

    size = int.from_bytes(read(8), 'little')
    return pickle.loads(read(size))


def _unpack(reply):
    if reply[0] == 'ok':
        return reply[1]
    exc = reply[1]
    if reply[2]:
        exc.add_note('in the client process:\n' + reply[2])
    raise exc


def _reap(pid, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while True:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return
        time.sleep(0.01)


# -------------------------------------------------------------------- Samba

def samba_prerequisites():
    for tool in ('smbd', 'smbclient', 'pdbedit'):
        if not shutil.which(tool):
            return f'{tool} is missing (apt-get install samba smbclient)'
    if os.geteuid() != 0:
        return 'a private smbd needs root'
    return None


class Samba:
    """A private smbd on 127.0.0.1:PORT exporting `share_path` as
    //127.0.0.1/inbox, configured from tools/smb.conf. SMB user inboxtest
    (password inboxtest) is mapped to the account inboxfs-smb."""

    def __init__(self, share_path, base, share_options=None, global_options=None):
        self.share_path = share_path
        self.base = base
        self.share_options = dict(share_options or {})
        self.global_options = dict(global_options or {})
        self.statedir = os.path.join(base, 'state')
        self.conf = os.path.join(base, 'smb.conf')
        self.log_path = os.path.join(base, 'smbd.log')
        self.port = None
        self.proc = None
        self.connections = []

    def write_config(self):
        with open(os.path.join(SOURCE, 'tools', 'smb.conf')) as f:
            text = f.read()
        for key, value in (('PORT', self.port), ('INTERFACES', '127.0.0.1'),
                           ('STATEDIR', self.statedir), ('SHARE', self.share_path)):
            text = text.replace(f'@{key}@', str(value))
        left = re.findall(r'@[A-Z_]+@', text)
        if left:
            raise AssertionError(f'tools/smb.conf: unknown placeholders {left}')
        # The share is the file's last section: later lines override.
        text += ''.join(f'   {k} = {v}\n' for k, v in self.share_options.items())
        with open(self.conf, 'w') as f:
            f.write(text)
        for sub in ('lock', 'state', 'cache', 'private', 'run', 'ncalrpc',
                    'bind-dns', 'usershares'):
            os.makedirs(os.path.join(self.statedir, sub), exist_ok=True)

    def start(self, timeout=TIMEOUT * 3):
        ensure_system_user(SMB_FORCE_USER)
        ensure_system_user(SMB_USER)
        for attempt in range(3):
            self.port = free_port()
            self.write_config()
            if attempt == 0:
                self.add_user(SMB_USER, SMB_PASSWORD)
            argv = ['smbd', '--foreground', '--no-process-group', '--debug-stdout',
                    '-s', self.conf]
            argv += [f'--option={k}={v}' for k, v in self.global_options.items()]
            # Its own session: smbd's parent signals its whole process group
            # when it shuts down, which must not be pytest's.
            with open(self.log_path, 'ab') as log:
                self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                             stdout=log, stderr=subprocess.STDOUT,
                                             cwd=self.base, start_new_session=True)
            if self._wait_listening(timeout):
                return self
            # Lost the port to someone else between probe and bind: retry.
            stop_process(self.proc)
        raise AssertionError(f'smbd did not start\n{self.log()}')

    def _wait_listening(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                socket.create_connection(('127.0.0.1', self.port), timeout=1).close()
                return True
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f'smbd did not listen on port {self.port} within '
                             f'{timeout:.0f}s\n{self.log()}')

    def add_user(self, user, password):
        proc = subprocess.run(['pdbedit', '-s', self.conf, '-a', '-t', '-u', user],
                              input=f'{password}\n{password}\n', capture_output=True,
                              text=True, timeout=TIMEOUT * 3)
        if proc.returncode != 0:
            raise AssertionError(f'pdbedit -a {user} failed:\n{proc.stdout}{proc.stderr}')

    def log(self):
        return read_log(self.log_path)

    def stop(self, timeout=TIMEOUT):
        for conn in self.connections:
            conn.disconnect()
        self.connections = []
        if self.proc is None:
            return
        # smbd runs in a process group of its own (start_new_session); its
        # children (one per connection, notifyd, cleanupd) follow their
        # parent out but are not ours to reap, so watch the group in /proc.
        # A group id is not reused while a member lives: killpg is safe.
        pgid = self.proc.pid
        stop_process(self.proc, timeout)
        self.proc = None
        try:
            wait_until(lambda: not process_group(pgid), timeout,
                       what='smbd children to exit')
        except TimeoutError:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            wait_until(lambda: not process_group(pgid), timeout,
                       what='smbd children to die')

    # -- clients

    def smbclient(self, commands, user=SMB_USER, password=SMB_PASSWORD,
                  timeout=TIMEOUT * 3):
        """Run smbclient -c COMMANDS against the share (CompletedProcess)."""
        return subprocess.run(
            ['smbclient', f'//127.0.0.1/{SMB_SHARE}', '-p', str(self.port),
             '-U', f'{user}%{password}', '-c', commands],
            stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=timeout, cwd=self.base)

    def smbclient_put(self, local, remote_name, **kw):
        """smbclient 'put LOCAL REMOTE'; raises with smbclient's output when
        it fails (smbclient exits 1 on a failed command)."""
        proc = self.smbclient(f'put "{local}" "{remote_name}"', **kw)
        if proc.returncode != 0 or 'NT_STATUS_' in proc.stdout + proc.stderr:
            raise AssertionError(f'smbclient put {remote_name} failed '
                                 f'({proc.returncode}):\n{proc.stdout}{proc.stderr}')
        return proc

    def connect(self, user=SMB_USER, password=SMB_PASSWORD):
        """A new SMB connection (one smbd process: one inboxfs session)."""
        conn = SmbClient(self.port, user, password)
        self.connections.append(conn)
        return conn

    def smb_create_new(self, name, data=b'', conn=None):
        """FILE_CREATE (create-new) NAME, write DATA, close. Returns
        STATUS_SUCCESS or the NTSTATUS the server answered (e.g.
        STATUS_OBJECT_NAME_COLLISION). Without conn, on a fresh connection."""
        if conn is not None:
            return conn.create_new(name, data)
        conn = SmbClient(self.port, SMB_USER, SMB_PASSWORD)
        try:
            return conn.create_new(name, data)
        finally:
            conn.disconnect()


class SmbClient:
    """An impacket SMB2/3 connection with the share connected. Raw access:
    .conn (SMBConnection) and .tid."""

    def __init__(self, port, user, password, timeout=TIMEOUT * 3):
        from impacket.smbconnection import SMBConnection
        self.conn = SMBConnection('127.0.0.1', '127.0.0.1', sess_port=port,
                                  timeout=timeout)
        self.conn.login(user, password)
        self.tid = self.conn.connectTree(SMB_SHARE)

    def create(self, name, disposition, data=None, close=True):
        """Open NAME with an SMB2 create disposition (FILE_CREATE,
        FILE_OPEN_IF, FILE_OVERWRITE_IF, FILE_SUPERSEDE, ...), write DATA.
        Returns (status, fid): fid is None when closed or failed."""
        from impacket import smb3structs as s3
        from impacket.smbconnection import SessionError
        try:
            fid = self.conn.createFile(
                self.tid, name,
                desiredAccess=(s3.FILE_READ_DATA | s3.FILE_WRITE_DATA
                               | s3.FILE_READ_ATTRIBUTES | s3.FILE_WRITE_ATTRIBUTES
                               | s3.DELETE),
                shareMode=s3.FILE_SHARE_READ,
                creationOption=s3.FILE_NON_DIRECTORY_FILE,
                creationDisposition=disposition)
        except SessionError as e:
            return e.getErrorCode(), None
        try:
            if data:
                self.conn.writeFile(self.tid, fid, data)
        except SessionError as e:
            self.conn.closeFile(self.tid, fid)
            return e.getErrorCode(), None
        if close:
            try:
                self.conn.closeFile(self.tid, fid)
            except SessionError as e:
                return e.getErrorCode(), None
            fid = None
        return STATUS_SUCCESS, fid

    def create_new(self, name, data=b''):
        from impacket import smb3structs as s3
        return self.create(name, s3.FILE_CREATE, data)[0]

    def close(self, fid):
        self.conn.closeFile(self.tid, fid)

    def listdir(self, pattern='*'):
        return sorted(f.get_longname() for f in self.conn.listPath(SMB_SHARE, pattern)
                      if f.get_longname() not in ('.', '..'))

    def read(self, name):
        chunks = []
        self.conn.getFile(SMB_SHARE, name, chunks.append)
        return b''.join(chunks)

    def disconnect(self):
        """Log off and drop the connection (its smbd process exits)."""
        if self.conn is None:
            return
        conn, self.conn = self.conn, None
        try:
            conn.close()   # logs off itself: logging off first confuses smbd
        except Exception:
            pass


def nt_status_name(code):
    from impacket import nt_errors
    return nt_errors.ERROR_MESSAGES.get(code, (hex(code),))[0]


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


def run_together(jobs, timeout=TIMEOUT * 6):
    """Run each job (uid, fn, args) in its own forked process as that uid;
    all call fn at once (they block on a pipe the parent closes when every
    child is ready). Returns the results in order; a child's exception is
    raised here. Every child is reaped (killed when late)."""
    go_r, go_w = os.pipe()
    ready_r, ready_w = os.pipe()
    children = []
    try:
        for uid, fn, args in jobs:
            res_r, res_w = os.pipe()
            pid = os.fork()
            if pid == 0:
                try:
                    os.close(go_w)
                    os.close(ready_r)
                    os.close(res_r)
                    Client(uid)._drop()
                    os.write(ready_w, b'.')
                    os.read(go_r, 1)                # EOF: the barrier opens
                    reply = ('ok', fn(*args))
                except BaseException as e:  # noqa: B902 - report everything
                    reply = ('err', e, traceback.format_exc())
                finally:
                    try:
                        _send(res_w, reply)
                    finally:
                        os._exit(0)
            os.close(res_w)
            children.append((pid, res_r))
        os.close(ready_w)
        ready_w = None
        deadline = time.monotonic() + timeout
        got = 0
        while got < len(jobs):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([ready_r], [], [], left)[0]:
                raise TimeoutError(f'only {got} of {len(jobs)} clients got ready')
            chunk = os.read(ready_r, 4096)
            if not chunk:
                raise AssertionError('a client died before the barrier')
            got += len(chunk)
        os.close(go_w)
        go_w = None
        replies = [_receive(fd, max(deadline - time.monotonic(), 0.1), pid)
                   for pid, fd in children]
    finally:
        for fd in (go_w, ready_w):
            if fd is not None:
                os.close(fd)
        os.close(go_r)
        os.close(ready_r)
        for pid, fd in children:
            os.close(fd)
            reap(pid)
    return [_unpack(reply) for reply in replies]
