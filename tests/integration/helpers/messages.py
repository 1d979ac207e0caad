"""Messages that prove themselves (MSG ID LENGTH SHA256, then the body), so
a test checks the backing inbox by content: what was delivered, intact or
not, and that every quarantined file has its log line."""

import collections
import errno
import hashlib
import os
import random
import re
import select
import time

from .files import incomplete, read_file, write_all
from .procs import wait_until

STAGING = '.inboxfs'

# core/staging.c quarantine_drop(): the name is escaped by log_name(), so it
# holds no raw double quote.
QUARANTINE_LINE = re.compile(
    r'quarantined "([^"]*)" as incomplete/([ad]\.[0-9a-f]+) \((-?\d+) bytes\): (.*)$')


def message(ident, size, rng=random):
    """A message that proves itself: MSG ID LENGTH SHA256\\n BODY."""
    body = rng.randbytes(size)
    head = f'MSG {ident} {size} {hashlib.sha256(body).hexdigest()}\n'.encode()
    return head + body


def storm_writer(mnt, ack_fd, drops, stat_fd=None, stop_fd=None, deadline=None):
    """One legacy client, in a forked child running as a client uid:
    create-new, write, close each (id, path under MNT, data, write size)
    that DROPS yields; an id is acknowledged (its line written to ACK_FD)
    only when every call, close() included, returned without error. With
    STAT_FD the errors are counted, the writer goes on after a short pause,
    and the counts are written there (a repr'd dict) at the end; without,
    the first error ends the writer. It ends at DEADLINE, once STOP_FD is
    readable (or closed), or when DROPS does."""
    errors = collections.Counter()
    for ident, path, data, chunk in drops:
        if deadline is not None and time.monotonic() >= deadline:
            break
        if stop_fd is not None and select.select([stop_fd], [], [], 0)[0]:
            break
        fd = None
        try:
            fd = os.open(os.path.join(mnt, path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            if data:
                write_all(fd, data, chunk=chunk)
            fd, closing = None, fd
            os.close(closing)
        except OSError as e:
            if stat_fd is None:
                raise
            errors[errno.errorcode.get(e.errno, str(e.errno))] += 1
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
            time.sleep(random.uniform(0.001, 0.01))
            continue
        os.write(ack_fd, f'{ident}\n'.encode())
    if stat_fd is not None:
        os.write(stat_fd, repr(dict(errors)).encode())


def message_id(data):
    """The id of an intact message, None for anything partial or corrupt."""
    head, sep, body = data.partition(b'\n')
    parts = head.split(b' ')
    if not sep or len(parts) != 4 or parts[0] != b'MSG':
        return None
    try:
        ident, size, digest = parts[1].decode(), int(parts[2]), parts[3].decode()
    except (UnicodeDecodeError, ValueError):
        return None
    if len(body) != size or hashlib.sha256(body).hexdigest() != digest:
        return None
    return ident


def claimed_id(data):
    """The id a (possibly partial) message's header names, or None."""
    parts = data.partition(b'\n')[0].split(b' ')
    if len(parts) >= 2 and parts[0] == b'MSG':
        return parts[1].decode(errors='replace')
    return None


def inbox_files(mount):
    """{relative path: bytes} of every regular file of the backing inbox,
    subdirectories included, staging excluded."""
    found = {}
    for top, dirs, files in os.walk(mount.inbox):
        if top == mount.inbox and STAGING in dirs:
            dirs.remove(STAGING)
        for name in files:
            path = os.path.join(top, name)
            if os.path.isfile(path) and not os.path.islink(path):
                found[os.path.relpath(path, mount.inbox)] = read_file(path)
    return found


def quarantine_lines(mount):
    """{stage name: (requested name, bytes, why)} from the logs of every run
    of the daemon over this inbox."""
    found = {}
    for run in mount.runs:
        for line in run.log().splitlines():
            m = QUARANTINE_LINE.search(line)
            if m:
                found[m.group(2)] = (m.group(1), int(m.group(3)), m.group(4))
    return found


def assert_quarantine_accounted(mount):
    """Every file in incomplete/ has its log line, with its size."""
    files = incomplete(mount.inbox)
    try:   # the file is moved first, then the line is written
        wait_until(lambda: set(files) <= set(quarantine_lines(mount)), timeout=2)
    except TimeoutError:
        pass
    lines = quarantine_lines(mount)
    unlogged = sorted(set(files) - set(lines))
    assert not unlogged, f'{len(unlogged)} quarantined files without a log line: {unlogged[:10]}'
    wrong = {n: (len(d), lines[n][1]) for n, d in files.items() if lines[n][1] != len(d)}
    assert not wrong, f'quarantine log lines with the wrong size (file, logged): {wrong}'
    return files, lines
