"""The mount options (README "Options", R11): every option in --help is
documented (README.md, the man page) and mounted by at least one test;
observers= (a group, a second uid, a user name), staging=, sync=none,
names= and linger= do what they say.

The tools/run demo is in test_deploy.py, the counters in test_stats.py."""

import errno
import os
import re
import time

import pytest

import helpers
from helpers import (CLIENT_UID, SMB_FORCE_USER, SOURCE, TAG, TIMEOUT, Client, create_excl,
                     errno_of, inbox_contents, is_build_dir, read_stats, staged, wait_until,
                     write_file)


# ------------------------------------------------------------------ helpers

class GroupClient(Client):
    """A client uid with supplementary groups (helpers.Client drops them)."""

    def __init__(self, uid, gid, groups):
        super().__init__(uid, gid)
        self.groups = list(groups)

    def _drop(self):
        os.setgroups(self.groups)
        os.setgid(self.gid)
        os.setuid(self.uid)


def _view_of(mnt, name):
    """What a requester sees of the inbox: its listing, and NAME's bytes
    (or the errno reading it fails with)."""
    listing = sorted(os.listdir(mnt))
    try:
        with open(os.path.join(mnt, name), 'rb') as f:
            return listing, f.read()
    except OSError as e:
        return listing, e.errno


def _read_stats_or_errno(mnt):
    try:
        return read_stats(mnt)
    except OSError as e:
        return e.errno


# ============================================ every option: docs and tests

def _help_options():
    proc = helpers.run_inboxfs('--help')
    assert proc.returncode == 0, proc.stderr
    options = re.findall(r'-o\s+([a-z_]+)=', proc.stdout + proc.stderr)
    assert options, proc.stdout + proc.stderr
    return options


def _man_pages():
    found = []
    for top, dirs, files in os.walk(SOURCE):
        dirs[:] = [d for d in dirs if not d.startswith('.')
                   and not is_build_dir(os.path.join(top, d))]
        found += [os.path.join(top, f) for f in files if re.fullmatch(r'inboxfs\.8(\..+)?', f)]
    return found


def test_every_option_is_documented_and_tested(run_inboxfs):
    """README "Options": each `-o NAME=` of --help is in README.md (and the
    man page) and mounted by at least one integration test."""
    options = _help_options()
    assert set(options) >= {'observers', 'staging', 'sync', 'names', 'linger'}, options
    with open(os.path.join(SOURCE, 'README.md')) as f:
        readme = f.read()
    undocumented = [o for o in options if f'{o}=' not in readme]
    assert not undocumented, f'README.md does not document {undocumented}'

    pages = _man_pages()
    for page in pages:
        with open(page, errors='replace') as f:
            text = f.read().replace('\\-', '-').replace('\\&', '')
        missing = [o for o in options if not re.search(rf'\b{o}=', text)]
        assert not missing, f'{page} does not list {missing}'

    tests_dir = os.path.dirname(os.path.abspath(__file__))
    sources = ''
    for name in sorted(os.listdir(tests_dir)):
        if name.startswith('test_') and name.endswith('.py'):
            with open(os.path.join(tests_dir, name)) as f:
                sources += f.read()
    # A mount_inboxfs(NAME=...) keyword or a literal '-o NAME=...' option.
    untested = [o for o in options
                if not re.search(rf"mount_inboxfs\([^)]*\b{o}=|['\"]{o}=", sources)]
    assert not untested, f'no test mounts with {untested}'
    if not pages:
        pytest.skip('no man page dist/inboxfs.8 in the source: README and tests checked')


OBSERVER_GID = 60050


def test_observers_group_sees_the_whole_inbox(mount_inboxfs):
    """observers=root:@GID: a uid whose group (primary or supplementary) is
    GID sees and reads every file, and the stats; other uids are clients."""
    m = mount_inboxfs(observers=f'root:@{OBSERVER_GID}')
    write_file(os.path.join(m.inbox, 'FOR-ALL.TXT'), b'in the inbox')

    primary = Client(60003, OBSERVER_GID)
    supplementary = GroupClient(60004, 60004, [OBSERVER_GID])
    for who in (primary, supplementary):
        listing, data = who.call(_view_of, m.mnt, 'FOR-ALL.TXT')
        assert 'FOR-ALL.TXT' in listing and data == b'in the inbox', (who.uid, listing, data)
        stats = who.call(_read_stats_or_errno, m.mnt)
        assert isinstance(stats, dict) and 'drops' in stats, (who.uid, stats)

    outsider = Client(CLIENT_UID)
    listing, data = outsider.call(_view_of, m.mnt, 'FOR-ALL.TXT')
    assert listing == [] and data == errno.ENOENT, (listing, data)
    assert outsider.call(_read_stats_or_errno, m.mnt) == errno.ENOENT
    # The outsider's drop of the same name is a client create: rewritten.
    outsider.call(create_excl, os.path.join(m.mnt, 'FOR-ALL.TXT'), b'a drop')
    found = inbox_contents(m.inbox)
    assert found['FOR-ALL.TXT'] == b'in the inbox' and b'a drop' in found.values(), found


def test_observers_second_uid_and_user_name(mount_inboxfs):
    """observers=root:UID:NAME: both accounts see the whole inbox."""
    account = helpers.ensure_system_user(SMB_FORCE_USER)
    m = mount_inboxfs(observers=f'root:60005:{SMB_FORCE_USER}')
    write_file(os.path.join(m.inbox, 'SEEN0001.SVF'), b'for observers')
    for who in (Client(60005), Client(account.pw_uid, account.pw_gid)):
        listing, data = who.call(_view_of, m.mnt, 'SEEN0001.SVF')
        assert listing == ['SEEN0001.SVF'] and data == b'for observers', (who.uid, listing)
    listing, data = Client(CLIENT_UID).call(_view_of, m.mnt, 'SEEN0001.SVF')
    assert listing == [] and data == errno.ENOENT
    assert read_stats(m.mnt)['drops'] == 0      # root is still an observer


def _staged_files(staging):
    return staged(None, acked=True, staging=staging)


def test_staging_dir_holds_drops_until_delivered(mount_inboxfs, client, tmp_path):
    """staging=DIR (same filesystem, elsewhere): an open drop is written
    there, not in the inbox; at its close it is delivered and leaves DIR."""
    staging = tmp_path / 'staging'
    staging.mkdir()
    m = mount_inboxfs(staging=str(staging))
    assert os.stat(staging).st_dev == os.stat(m.inbox).st_dev
    before = set(_staged_files(staging))

    session = client.session()
    fd = session.open(os.path.join(m.mnt, 'STAGED01.SVF'),
                      os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    session.write(fd, b'staged elsewhere')
    new = [n for n in _staged_files(staging) if n not in before]
    assert len(new) == 1, f'staging holds {_staged_files(staging)}'
    with open(staging / new[0], 'rb') as f:
        assert f.read() == b'staged elsewhere'
    assert inbox_contents(m.inbox) == {}
    default = os.path.join(m.inbox, '.inboxfs')
    if os.path.isdir(default):
        assert not [n for n in os.listdir(default) if n.startswith('d.')], \
            os.listdir(default)
    session.close(fd)

    assert inbox_contents(m.inbox) == {'STAGED01.SVF': b'staged elsewhere'}
    wait_until(lambda: set(_staged_files(staging)) <= before, what='the drop to leave staging')


def test_sync_none_delivers_drops(mount_inboxfs):
    """sync=none: drops, colliding ones too, are delivered at their close."""
    m = mount_inboxfs(sync='none')
    path = os.path.join(m.mnt, 'NOSYNC01.SVF')
    Client(CLIENT_UID).call(create_excl, path, b'first')
    Client(CLIENT_UID + 1).call(create_excl, path, b'second')
    found = inbox_contents(m.inbox)
    assert found.pop('NOSYNC01.SVF') == b'first'
    assert list(found.values()) == [b'second'], found
    assert re.fullmatch(rf'NOSYNC01~{TAG}{{12}}\.SVF', next(iter(found)))
    stats = read_stats(m.mnt)
    assert (stats['publications'], stats['rewrites'], stats['errors']) == (2, 1, 0), stats


def _collide(m, name, data=b'the colliding drop'):
    """Put NAME in the backing inbox, then have a client create it: the
    name the drop got."""
    write_file(os.path.join(m.inbox, name), b'already there')
    before = set(inbox_contents(m.inbox))
    Client(CLIENT_UID).call(create_excl, os.path.join(m.mnt, name), data)
    found = inbox_contents(m.inbox)
    new = [n for n in found if n not in before]
    assert len(new) == 1 and found[new[0]] == data, sorted(found)
    assert found[name] == b'already there'
    return new[0]


def test_names_8_3(mount_inboxfs):
    """names=8.3: a collision gets 8 tag characters, a dot and at most 3
    of the extension's, its case kept."""
    m = mount_inboxfs(names='8.3')
    got = _collide(m, 'MSG00001.SVF')
    assert re.fullmatch(rf'{TAG}{{8}}\.SVF', got), got
    got = _collide(m, 'report.json')
    assert re.fullmatch(rf'{TAG}{{8}}\.jso', got), got
    assert re.search(rf'rewrite: "report\.json" stored as "{re.escape(got)}"', m.log())


def test_names_custom_template(mount_inboxfs):
    """names=%s-%6t%e: STEM-TAG6.EXT."""
    m = mount_inboxfs(names='%s-%6t%e')
    got = _collide(m, 'MSG00001.SVF')
    assert re.fullmatch(rf'MSG00001-{TAG}{{6}}\.SVF', got), got
    got = _collide(m, 'noext')
    assert re.fullmatch(rf'noext-{TAG}{{6}}', got), got


def test_linger_0_is_accepted(mount_inboxfs, client):
    """linger=0 (the default, explicit): a drop is in the inbox when its
    close returns."""
    m = mount_inboxfs(linger=0)
    client.call(create_excl, os.path.join(m.mnt, 'LINGER00.SVF'), b'at once')
    assert inbox_contents(m.inbox) == {'LINGER00.SVF': b'at once'}


def test_linger_other_than_0(run_inboxfs, mount_inboxfs, as_client, tmp_path):
    """linger=N: a closed drop stays visible to its session and is
    published only after N seconds."""
    m = mount_inboxfs(linger=2)
    session = as_client().session()
    other = as_client(CLIENT_UID + 1)
    path = os.path.join(m.mnt, 'LINGER02.SVF')
    fd = session.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    session.write(fd, b'lingering')
    session.close(fd)
    closed = time.monotonic()
    assert session.stat(path).st_size == len(b'lingering')
    assert 'LINGER02.SVF' in session.listdir(m.mnt)
    assert inbox_contents(m.inbox) == {}, 'published before linger= elapsed'
    assert other.call(_view_of, m.mnt, 'LINGER02.SVF') == ([], errno.ENOENT)
    wait_until(lambda: inbox_contents(m.inbox), 2 + TIMEOUT, interval=0.05,
               what='the lingering drop to be published')
    assert time.monotonic() - closed >= 1.5, 'published well before linger=2 elapsed'
    assert inbox_contents(m.inbox) == {'LINGER02.SVF': b'lingering'}


# ---------------------------------------------------------------- xattr=

def test_xattr_no_answers_every_attribute_request_once(mount_inboxfs, client):
    """xattr=no: every extended-attribute request fails as "not supported"
    (an ACL read: "none"), for observers and clients alike, and each kind
    reaches the daemon once
    (the kernel keeps its ENOSYS for the mount): smbd's reads of the
    directory's ACLs at every create cost no round trip. The backing
    files keep their attributes."""
    mount = mount_inboxfs(debug=True, xattr='no')
    backing = os.path.join(mount.inbox, 'KEPT.TXT')
    write_file(backing, b'kept')
    os.setxattr(backing, 'user.keep', b'1')
    path = os.path.join(mount.mnt, 'KEPT.TXT')
    start = len(mount.log())
    calls = [(os.getxattr, path, 'user.keep'),
             (os.getxattr, mount.mnt, 'system.posix_acl_access'),
             (os.getxattr, mount.mnt, 'system.posix_acl_default'), (os.listxattr, path),
             (os.setxattr, path, 'user.x', b'y'), (os.removexattr, path, 'user.keep')]
    # (An ACL read finds none, as on a file without one, once the kernel
    # knows the daemon answers no GETXATTR.)
    expected = [errno.EOPNOTSUPP, errno.ENODATA, errno.ENODATA] + [errno.EOPNOTSUPP] * 3
    for _ in range(3):
        assert [errno_of(*call) for call in calls] == expected
    assert client.call(errno_of, os.getxattr, mount.mnt, 'system.posix_acl_access') == \
        errno.ENODATA
    ops = re.findall(r'opcode: (\w*XATTR)', mount.log()[start:])
    assert sorted(ops) == ['GETXATTR', 'LISTXATTR', 'REMOVEXATTR', 'SETXATTR'], ops
    assert os.listxattr(backing) == ['user.keep'] and os.getxattr(backing, 'user.keep') == b'1'
    assert 'xattr=no' in mount.log()


def test_xattr_no_covers_the_stats_file_too(mount_inboxfs):
    """xattr=no: the stats file's extended attributes are "not supported"
    as every file's, also when its requests are each kind's first (the
    stats file is served by a wrapper around the operations table, which
    must not answer for them)."""
    mount = mount_inboxfs(xattr='no')
    path = os.path.join(mount.mnt, '.inboxfs-stats')
    calls = [(os.getxattr, path, 'user.x'), (os.listxattr, path),
             (os.setxattr, path, 'user.x', b'y'), (os.removexattr, path, 'user.x')]
    assert [errno_of(*call) for call in calls] == [errno.EOPNOTSUPP] * 4


def test_xattr_yes_is_the_default_and_serves_attributes(mount_inboxfs):
    mount = mount_inboxfs()
    path = os.path.join(mount.mnt, 'A.TXT')
    write_file(path, b'a')
    os.setxattr(path, 'user.x', b'y')
    assert os.getxattr(os.path.join(mount.inbox, 'A.TXT'), 'user.x') == b'y'
    assert 'xattr=yes' in mount.log()
