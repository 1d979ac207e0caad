"""Client uids: a Client runs commands or forked calls as a non-root
requester, a ClientSession keeps one process (one inboxfs session) alive,
run_together starts many at once; results travel back pickled over pipes.
kill_writer() plays a writer killed with its drops open."""

import hashlib
import os
import pickle
import select
import signal
import subprocess
import sys
import time
import traceback

from .env import CLIENT_UID, TIMEOUT
from .procs import reap, stop_process


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


# A writer that never closes: it creates each of its paths (create-new),
# writes DATA into each (empty: 64 KiB chunks of stream_bytes(), CHUNKS of
# them, or on and on with "stream"), says how many bytes each has so far,
# and waits to be killed.
_KILLED_WRITER = r'''
import hashlib, os, sys
mode, chunks, data, paths = sys.argv[1], int(sys.argv[2]), os.fsencode(sys.argv[3]), sys.argv[4:]
def chunk(k):
    return hashlib.sha256(b'%d' % k).digest() * 2048          # 64 KiB
fds = [os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644) for p in paths]
written, k = 0, 0
while True:
    piece = data if data else chunk(k)
    for fd in fds:
        view = memoryview(piece)
        while view:
            view = view[os.write(fd, view):]
    written, k = written + len(piece), k + 1
    if mode == 'park' and (data or k == chunks):
        sys.stdout.write('%d\n' % written); sys.stdout.flush()
        sys.stdin.read()                       # parked until killed
    elif mode == 'stream' and k % 4 == 0:
        sys.stdout.write('%d\n' % written); sys.stdout.flush()
'''


def stream_bytes(size):
    """The first SIZE bytes a killed writer without DATA writes."""
    out = b''.join(hashlib.sha256(b'%d' % k).digest() * 2048 for k in range(size // 65536 + 1))
    return out[:size]


def kill_writer(client, paths, data=b'', chunks=3, stream=False, before_kill=None):
    """A CLIENT process writing into new PATHS (a path or a list), SIGKILLed
    with them open, before any close: the kernel's close of a dead
    writer's files, which is no acknowledgement (R6). It writes DATA once,
    or without it CHUNKS 64 KiB chunks of stream_bytes() into each; with
    stream it goes on writing and is killed mid-stream once it has written
    at least that much. before_kill() runs just before the SIGKILL. Returns
    the bytes each file had been given when last reported (with stream, the
    file may hold more)."""
    if isinstance(paths, (str, bytes, os.PathLike)):
        paths = [paths]
    data = data.encode() if isinstance(data, str) else data
    proc = client.popen([sys.executable, '-c', _KILLED_WRITER, 'stream' if stream else 'park',
                         str(chunks), os.fsdecode(data), *map(os.fsdecode, paths)],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        target = len(data) if data else chunks * 65536
        written = 0
        while written < target:
            if not select.select([proc.stdout], [], [], TIMEOUT)[0]:
                raise AssertionError('the writer did not write')
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(f'the writer died: {proc.wait(TIMEOUT)}')
            written = int(line)
        if before_kill:
            before_kill()
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=TIMEOUT) == -signal.SIGKILL
    finally:
        stop_process(proc, sig=signal.SIGKILL)
        proc.stdin.close()
        proc.stdout.close()
    return written
