"""The test environment: settings from the environment (INBOXFS_*), fixed
uids and SMB accounts, and the directories, accounts and ports tests make."""

import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
import time


# This file is tests/integration/helpers/env.py: the source is four up.
SOURCE = os.environ.get(
    'INBOXFS_SOURCE',
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))))
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
OTHER_UID = 60002   # a second client
OBSERVER_UID = 0

SMB_FORCE_USER = 'inboxfs-smb'   # dist/samba/smb.conf: force user
SMB_USER = 'inboxtest'
SMB_PASSWORD = 'inboxtest'
SMB_SHARE = 'inbox'
SMB_CONSUMER_SHARE = 'consumer'
SMB_CONSUMER_USER = 'inboxconsumer'   # dist/samba/smb.conf: [consumer] valid users
SMB_CONSUMER_PASSWORD = 'inboxconsumer'

STATUS_SUCCESS = 0
STATUS_OBJECT_NAME_COLLISION = 0xC0000035


class Unavailable(RuntimeError):
    """This machine cannot provide it (a loop device, FUSE over io_uring):
    a skip for a test, a note for tools/bench."""


def make_base_dir(prefix, parent=None):
    """A fresh directory (in PARENT, default INBOXFS_TMPDIR or /tmp) that
    client uids and smbd's force user can traverse (pytest's own tmp dirs
    are 0700)."""
    base = tempfile.mkdtemp(prefix=prefix, dir=parent or os.environ.get('INBOXFS_TMPDIR'))
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


def is_build_dir(path):
    """Is PATH a meson build directory (build, build-*, or configured)?"""
    name = os.path.basename(path)
    return (name == 'build' or name.startswith('build-')
            or os.path.isdir(os.path.join(path, 'meson-private')))


def copy_source(dest):
    """The repository without its build directories (and caches)."""
    def ignore(directory, names):
        skipped = set()
        for name in names:
            path = os.path.join(directory, name)
            if name in ('.pytest_cache', '__pycache__'):
                skipped.add(name)
            elif os.path.isdir(path) and not os.path.islink(path) and is_build_dir(path):
                skipped.add(name)
            elif not (os.path.isdir(path) or os.path.isfile(path) or os.path.islink(path)):
                skipped.add(name)     # sockets, fifos
        return skipped
    shutil.copytree(SOURCE, dest, symlinks=True, ignore=ignore)
    return dest
