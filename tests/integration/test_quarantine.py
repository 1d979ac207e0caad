"""tools/inboxfs-quarantine (R6, R10; README "Quarantine"): list the drops
inboxfs quarantined with their requested names, sizes, times and why; show one;
release one into the inbox atomically (a unique name when the requested one is
taken, never an overwrite, logged); purge old ones. With a separate mountpoint,
with an over-mount (the real staging directory is hidden under the mount), and
with per-instance staging areas (STAGING/*/incomplete). The tool is a C program
on the core library (R9's names): it names, publishes and reads origins as the
daemon does."""

import ctypes
import errno
import json
import os
import re
import subprocess
import time

import pytest

from helpers import (SOURCE, TIMEOUT, create_excl, incomplete, inbox_contents, kill_writer,
                     staged, wait_until)

# The built tool (INBOXFS_QUARANTINE: another one, e.g. an older version's).
BUILD = os.environ.get('INBOXFS_BUILD', os.path.join(SOURCE, 'build'))
TOOL = os.environ.get('INBOXFS_QUARANTINE') or os.path.join(BUILD, 'tools',
                                                            'inboxfs-quarantine')

def quarantine(mount, client, name, data):
    """A client killed while writing NAME: its drop goes to incomplete/."""
    before = set(incomplete(mount.inbox))
    kill_writer(client, os.path.join(mount.mnt, name), data)
    found = wait_until(lambda: set(incomplete(mount.inbox)) - before,
                       what='the drop in incomplete/')
    [staged_name] = found
    return staged_name


def _arg(a):
    return os.fsencode(a) if isinstance(a, (str, bytes, os.PathLike)) else str(a)


def tool(*args, check=True, text=True):
    proc = subprocess.run([TOOL, *map(_arg, args)], stdin=subprocess.DEVNULL,
                          capture_output=True, text=text, timeout=TIMEOUT * 3)
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
    # A delivered message carries nothing of inboxfs but the origin every
    # delivery leaves on it (nothing reads it outside staging).
    assert [x for x in os.listxattr(os.path.join(mounted.inbox, other))
            if x.startswith('trusted.inboxfs')] == ['trusted.inboxfs.origin']
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
    kill_writer(client, os.path.join(mount.mnt, 'OVER.SVF'), 'under the mount')

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


def test_release_under_names_8_3_gives_the_daemons_form(mount_inboxfs, client):
    """The tool names a drop as the inbox's instances do: each records its
    names= template in the staging directory (red on 6a4ccfe: the Python
    tool ignored names= and gave REPORT~TAG.TXT)."""
    m = mount_inboxfs(names='8.3')
    client.call(create_excl, os.path.join(m.mnt, 'REPORT.TXT'), b'delivered')
    name = quarantine(m, client, 'REPORT.TXT', 'released late')

    final = tool('release', m.inbox, name).stdout.strip()
    assert re.fullmatch(r'[0-9A-Z]{8}\.TXT', final), final
    assert open(os.path.join(m.inbox, '.inboxfs', 'names')).read() == '%8t%3e\n'
    assert inbox_contents(m.inbox) == {'REPORT.TXT': b'delivered', final: b'released late'}

    # --names overrides what the staging directory says.
    again = quarantine(m, client, 'REPORT.TXT', 'and once more')
    other = tool('release', '--names', 'default', m.inbox, again).stdout.strip()
    assert re.fullmatch(r'REPORT~[0-9A-Z]{12}\.TXT', other), other
    assert tool('release', '--names', '%t', m.inbox, 'd.x', check=False).returncode == 1


def test_release_of_a_255_byte_extension_whose_name_is_taken(mounted, client):
    """'a.' and 253 'b': the extension alone fills a name. With the name
    taken, release gives a valid unique name or fails cleanly, and never
    loops (red on 6a4ccfe: the Python tool shortened an empty stem forever,
    killed by the timeout, after it had removed the drop's origin)."""
    long_name = 'a.' + 'b' * 253
    with open(os.path.join(mounted.inbox, long_name), 'wb') as f:
        f.write(b"the consumer's")
    name = quarantine(mounted, client, long_name, 'a long extension')

    proc = tool('release', mounted.inbox, name, check=False)
    final = proc.stdout.strip()
    if proc.returncode == 0:
        assert len(final.encode()) <= 255 and '/' not in final and final != long_name
        # The daemon's form: the extension cut to leave room for the tag.
        assert re.fullmatch(r'~[0-9A-Z]{12}\.b{200,}', final), final
        assert inbox_contents(mounted.inbox) == {long_name: b"the consumer's",
                                                 final: b'a long extension'}
    else:
        [d] = json.loads(tool('list', '--json', mounted.inbox).stdout)
        assert (d['id'], d['requested']) == (name, long_name)
        assert incomplete(mounted.inbox) == {name: b'a long extension'}


def test_list_and_show_escape_what_a_terminal_would_obey(mounted, client):
    """Client-chosen names reach root's terminal escaped: C0, DEL, C1 (as
    UTF-8: U+009B is a CSI) and invalid UTF-8 (red on 6a4ccfe: U+009B was
    printed raw). --json escapes them as JSON does."""
    c1 = quarantine(mounted, client, 'X\u009b2JY.TXT', 'c1')
    bad = quarantine(mounted, client, os.fsdecode(b'BAD\xff\x7f.TXT'), 'invalid')

    for args in (('list', mounted.inbox), ('show', mounted.inbox, c1),
                 ('show', mounted.inbox, bad)):
        out = tool(*args, text=False).stdout
        assert not re.search(rb'[\x00-\x09\x0b-\x1f\x7f-\xff]', out), (args, out)
    listing = tool('list', mounted.inbox).stdout
    assert 'X\\xc2\\x9b2JY.TXT' in listing and 'BAD\\xff\\x7f.TXT' in listing, listing
    assert 'requested: X\\xc2\\x9b2JY.TXT' in tool('show', mounted.inbox, c1).stdout

    out = tool('list', '--json', mounted.inbox, text=False).stdout
    assert not re.search(rb'[\x00-\x09\x0b-\x1f\x7f-\xff]', out), out
    requested = {d['id']: d['requested'] for d in json.loads(out)}
    assert requested == {c1: 'X\u009b2JY.TXT', bad: os.fsdecode(b'BAD\xff\x7f.TXT')}


def _outside_subdir(mount):
    """SUB in the inbox, for clients to drop into."""
    sub = os.path.join(mount.inbox, 'SUB')
    os.mkdir(sub)
    os.chmod(sub, 0o1777)
    return sub


def test_release_into_a_directory_moved_out_of_the_inbox_goes_to_the_top(mounted, client):
    """The drop's directory was moved out of the inbox (same filesystem):
    its file handle still opens it, but the drop is delivered inside the
    inbox, at its top (red on 6a4ccfe: delivered outside)."""
    sub = _outside_subdir(mounted)
    name = quarantine(mounted, client, 'SUB/MOVED.SVF', 'moved away')
    outside = os.path.join(mounted.base, 'outside')
    os.rename(sub, outside)

    assert tool('release', mounted.inbox, name).stdout.strip() == 'MOVED.SVF'
    assert os.listdir(outside) == []
    assert inbox_contents(mounted.inbox) == {'MOVED.SVF': b'moved away'}


def test_release_into_a_directory_still_in_the_inbox(mounted, client):
    sub = _outside_subdir(mounted)
    os.mkdir(os.path.join(sub, 'DEEP'), 0o1777)
    os.chmod(os.path.join(sub, 'DEEP'), 0o1777)
    name = quarantine(mounted, client, 'SUB/DEEP/HERE.SVF', 'deep')
    assert tool('release', mounted.inbox, name).stdout.strip() == 'HERE.SVF'
    assert inbox_contents(mounted.inbox, 'SUB/DEEP') == {'HERE.SVF': b'deep'}


def test_recovery_into_a_directory_moved_out_of_the_inbox_goes_to_the_top(mount_inboxfs,
                                                                          client):
    """An acknowledged drop of a crashed instance whose directory was moved
    out of the inbox: recovery delivers it at the inbox's top (red on
    6a4ccfe: delivered in the moved directory, outside the inbox)."""
    m = mount_inboxfs(linger=60)
    sub = _outside_subdir(m)
    client.call(create_excl, os.path.join(m.mnt, 'SUB', 'ACKED.SVF'), b'acknowledged')
    assert [os.path.basename(s)[:2] for s in staged(m.inbox, acked=True)] == ['a.']
    m.crash()
    outside = os.path.join(m.base, 'outside')
    os.rename(sub, outside)

    m.recover()
    assert os.listdir(outside) == []
    assert inbox_contents(m.inbox) == {'ACKED.SVF': b'acknowledged'}
    assert 'is not in the inbox' in m.log()


def test_a_failed_release_leaves_the_drop_and_its_origin(mounted, client):
    """The inbox refuses the file (immutable, chattr +i): the release fails
    in one line and the drop stays quarantined as it was, its requested
    name and directory included (red on 6a4ccfe: the Python tool removed
    the origin first, and the drop's requested name was lost)."""
    name = quarantine(mounted, client, 'KEPT.SVF', 'kept')
    chattr = subprocess.run(['chattr', '+i', mounted.inbox], capture_output=True)
    if chattr.returncode != 0:
        pytest.skip(f'chattr +i: {chattr.stderr!r}')
    try:
        proc = tool('release', mounted.inbox, name, check=False)
    finally:
        subprocess.run(['chattr', '-i', mounted.inbox], check=True)
    assert proc.returncode == 1 and proc.stdout == '', proc
    [d] = json.loads(tool('list', '--json', mounted.inbox).stdout)
    assert (d['id'], d['requested']) == (name, 'KEPT.SVF')
    assert proc.stderr.count('\n') == 1 and 'stays quarantined' in proc.stderr, proc.stderr
    assert incomplete(mounted.inbox) == {name: b'kept'}
    # And it can be released once the inbox takes it.
    assert tool('release', mounted.inbox, name).stdout.strip() == 'KEPT.SVF'
    assert inbox_contents(mounted.inbox) == {'KEPT.SVF': b'kept'}


def test_release_names_a_taken_name_as_the_daemon_does(mounted, client):
    """A leading dot and a character Windows forbids: the tool's unique name
    has the daemon's form, tag aside (red on 6a4ccfe: the Python tool gave
    'a:b~TAG.TXT', the daemon '_a_b~TAG.TXT')."""
    requested = '.a:b.TXT'
    with open(os.path.join(mounted.inbox, requested), 'wb') as f:
        f.write(b'first')
    client.call(create_excl, os.path.join(mounted.mnt, requested), b'by the daemon')
    name = quarantine(mounted, client, requested, 'by the tool')
    released = tool('release', mounted.inbox, name).stdout.strip()

    found = inbox_contents(mounted.inbox)
    [by_daemon] = [n for n, data in found.items() if data == b'by the daemon']
    assert found[released] == b'by the tool'
    untagged = {re.sub(r'~[0-9A-Z]{12}\.', '~TAG.', n) for n in (by_daemon, released)}
    assert untagged == {'_a_b~TAG.TXT'}, (by_daemon, released)
