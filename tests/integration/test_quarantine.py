"""tools/inboxfs-quarantine (issue 13 item 5, R6): list the drops inboxfs
quarantined with their requested names, sizes, times and why; show one;
release one into the inbox atomically (a unique name when the requested
one is taken, never an overwrite, logged); purge old ones. With a separate
mountpoint, with an over-mount (the real staging directory is hidden under
the mount), and with per-instance staging areas (STAGING/*/incomplete)."""

import json
import os
import re
import select
import signal
import subprocess
import sys
import time


import helpers
from helpers import SOURCE, TIMEOUT, incomplete, inbox_contents, wait_until

TOOL = os.path.join(SOURCE, 'tools', 'inboxfs-quarantine')

# Writes a partial message, says so, then waits to be killed.
KILLED_WRITER = r'''
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
os.write(fd, sys.argv[2].encode())
print('written', flush=True)
sys.stdin.read()
'''


def kill_mid_write(client, path, data):
    """A client writing DATA into a new PATH, killed before it closes."""
    proc = client.popen([sys.executable, '-c', KILLED_WRITER, path, data],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        ready = select.select([proc.stdout], [], [], TIMEOUT)[0]
        assert ready and proc.stdout.readline() == b'written\n', 'writer did not start'
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=TIMEOUT)
    finally:
        helpers.stop_process(proc, sig=signal.SIGKILL)
        proc.stdin.close()
        proc.stdout.close()


def quarantine(mount, client, name, data):
    """A client killed while writing NAME: its drop goes to incomplete/."""
    before = set(incomplete(mount.inbox))
    kill_mid_write(client, os.path.join(mount.mnt, name), data)
    found = wait_until(lambda: set(incomplete(mount.inbox)) - before,
                       what='the drop in incomplete/')
    [staged_name] = found
    return staged_name


def tool(*args, check=True):
    proc = subprocess.run([TOOL, *map(str, args)], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=TIMEOUT * 3)
    if check:
        assert proc.returncode == 0, f'{args}: {proc.returncode}\n{proc.stdout}{proc.stderr}'
    return proc


def test_list_show_release_with_a_separate_mountpoint(mounted, client):
    first = quarantine(mounted, client, 'MSG1.SVF', 'partial one')
    second = quarantine(mounted, client, 'MSG1.SVF', 'partial two, longer')

    listing = json.loads(tool('list', '--json', mounted.inbox).stdout)
    assert sorted(d['id'] for d in listing) == sorted([first, second])
    for d in listing:
        assert d['requested'] == 'MSG1.SVF'
        assert d['size'] == (11 if d['id'] == first else 19)
        assert 'close' in d['why']
        assert re.fullmatch(r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ', d['time'])
    text = tool('list', mounted.inbox).stdout
    assert first in text and second in text and 'MSG1.SVF' in text, text

    shown = tool('show', mounted.inbox, first).stdout
    assert 'requested: MSG1.SVF' in shown and 'partial one' in shown, shown

    # Released under the requested name, then the second beside it.
    proc = tool('release', mounted.inbox, first)
    assert proc.stdout.strip() == 'MSG1.SVF'
    assert 'released' in proc.stderr and 'MSG1.SVF' in proc.stderr
    proc = tool('release', mounted.inbox, second)
    other = proc.stdout.strip()
    assert re.fullmatch(r'MSG1~[0-9A-Z]{12}\.SVF', other), other
    assert inbox_contents(mounted.inbox) == {'MSG1.SVF': b'partial one',
                                             other: b'partial two, longer'}
    assert incomplete(mounted.inbox) == {}
    # A delivered message carries nothing of inboxfs.
    assert not [x for x in os.listxattr(os.path.join(mounted.inbox, other))
                if x.startswith('trusted.inboxfs')]
    assert tool('list', mounted.inbox).stdout.strip() == 'no quarantined drops'


def test_release_never_overwrites_and_can_rename(mounted, client):
    with open(os.path.join(mounted.inbox, 'TAKEN.SVF'), 'wb') as f:
        f.write(b'the consumer\'s')
    name = quarantine(mounted, client, 'TAKEN.SVF', 'late')
    assert tool('release', '--name', 'TAKEN.SVF', mounted.inbox, name).stdout.strip() \
        .startswith('TAKEN~')
    found = inbox_contents(mounted.inbox)
    assert found.pop('TAKEN.SVF') == b'the consumer\'s'
    assert list(found.values()) == [b'late']
    assert tool('release', mounted.inbox, 'no-such', check=False).returncode == 1


def test_purge_older_than(mounted, client):
    old = quarantine(mounted, client, 'OLD.SVF', 'old')
    new = quarantine(mounted, client, 'NEW.SVF', 'new')
    path = os.path.join(mounted.inbox, '.inboxfs', 'incomplete', old)
    ten_days_ago = time.time() - 10 * 86400
    os.utime(path, (ten_days_ago, ten_days_ago))

    dry = tool('purge', '--older-than', 7, '--dry-run', mounted.inbox).stdout
    assert old in dry and new not in dry
    assert set(incomplete(mounted.inbox)) == {old, new}
    tool('purge', '--older-than', 7, mounted.inbox)
    assert set(incomplete(mounted.inbox)) == {new}


def test_over_mount_reaches_the_hidden_staging_directory(mount_inboxfs, client):
    """Under an over-mount INBOX/.inboxfs is hidden from everyone: the tool
    works on the directory beneath the mount."""
    mount = mount_inboxfs(overmount=True)
    name = quarantine_overmount(mount, client)
    assert not os.path.exists(os.path.join(mount.mnt, '.inboxfs'))

    listing = json.loads(tool('list', '--json', mount.inbox).stdout)
    assert [(d['id'], d['requested']) for d in listing] == [(name, 'OVER.SVF')]
    assert tool('release', mount.inbox, name).stdout.strip() == 'OVER.SVF'
    mount.unmount()
    assert inbox_contents(mount.inbox) == {'OVER.SVF': b'under the mount'}


def quarantine_overmount(mount, client):
    """quarantine() reads incomplete/ through the backing path, which an
    over-mount hides: look beneath it from a private mount namespace."""
    kill_mid_write(client, os.path.join(mount.mnt, 'OVER.SVF'), 'under the mount')

    def listed():
        out = tool('list', '--json', mount.inbox).stdout
        return [d['id'] for d in json.loads(out)]
    [name] = wait_until(listed, what='the quarantined drop')
    return name


def test_per_instance_staging_areas(mounted, client):
    """Staging areas of several instances: STAGING/AREA/incomplete."""
    name = quarantine(mounted, client, 'AREA.SVF', 'from instance b')
    staging = os.path.join(mounted.inbox, '.inboxfs')
    os.makedirs(os.path.join(staging, 'host-b.1234', 'incomplete'))
    os.rename(os.path.join(staging, 'incomplete', name),
              os.path.join(staging, 'host-b.1234', 'incomplete', name))

    listing = json.loads(tool('list', '--json', mounted.inbox).stdout)
    assert [(d['id'], d['requested']) for d in listing] == \
        [(f'host-b.1234/{name}', 'AREA.SVF')]
    tool('release', mounted.inbox, f'host-b.1234/{name}')
    assert inbox_contents(mounted.inbox) == {'AREA.SVF': b'from instance b'}


def test_no_staging_directory_is_one_clear_line(tmp_path):
    proc = tool('list', tmp_path, check=False)
    assert proc.returncode == 1
    assert proc.stderr.count('\n') == 1 and 'no staging directory' in proc.stderr
