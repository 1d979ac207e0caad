"""tools/inbox-storm, the legacy-client load generator (R1, R4): many
clients dropping clock-seeded or fixed names with create-new at once, with
delivery verified by content in the backing inbox. A plain directory or
share loses messages; inboxfs, locally and behind Samba, loses none."""

import json
import os
import shutil
import subprocess

import pytest

from helpers import SMB_PASSWORD, SMB_USER, TIMEOUT

BUILD = os.environ.get('INBOXFS_BUILD', '')
STORM = os.path.join(BUILD, 'tools', 'inbox-storm') if BUILD else ''

# Not a passwd entry, and not a uid other tests use: a client of inboxfs.
STORM_UID = 60010
RUN_ID = '5e1f0ca7c0ffee00'


@pytest.fixture
def storm():
    """storm(*args, uid=None) runs inbox-storm --json -q ARGS (as UID if
    given) and returns (exit status, parsed summary or None, stderr)."""
    if not STORM or not os.access(STORM, os.X_OK):
        pytest.skip('INBOXFS_BUILD/tools/inbox-storm is not built')

    def run(*args, uid=None, timeout=TIMEOUT * 12):
        argv = [STORM, '--json', '-q', *map(str, args)]
        if uid is not None:
            if os.geteuid() != 0:
                pytest.skip('switching to a client uid needs root')
            if not shutil.which('setpriv'):
                pytest.skip('setpriv is missing (util-linux)')
            argv = ['setpriv', f'--reuid={uid}', f'--regid={uid}', '--clear-groups',
                    *argv]
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout, cwd='/')
        summary = json.loads(proc.stdout) if proc.stdout.strip() else None
        return proc.returncode, summary, proc.stderr

    return run


def assert_everything_delivered(status, summary, stderr):
    assert summary is not None, stderr
    assert summary['verified'], summary
    assert summary['sent'] > 0
    assert summary['acked'] == summary['sent'], (summary, stderr)
    assert summary['delivered'] == summary['sent'], (summary, stderr)
    for key in ('lost', 'lost_acked', 'collisions', 'errors', 'corrupt', 'duplicated',
                'unexpected', 'crashed_clients'):
        assert summary[key] == 0, (key, summary, stderr)
    assert status == 0, (summary, stderr)


def assert_only_messages(inbox, count, ext='.SVF'):
    """The backing inbox holds exactly COUNT visible files, extension kept."""
    names = [n for n in os.listdir(inbox) if not n.startswith('.')]
    assert len(names) == count
    assert all(n.endswith(ext) for n in names), sorted(names)[:10]


# ------------------------------------------------------------ the problem

@pytest.mark.parametrize('names', ['fixed', 'clock'])
def test_plain_directory_loses_messages(storm, plain_inbox, names):
    status, s, err = storm('--clients', 8, '--messages', 40, '--names', names,
                           '--verify', plain_inbox, plain_inbox)

    assert status == 1, (s, err)
    assert s['sent'] == 320
    assert s['collisions'] > 0 and s['lost'] > 0
    # The losses are exactly the given-up creates: nothing else went wrong.
    assert s['lost'] == s['collisions'] == s['sent'] - s['delivered']
    assert s['delivered'] == s['acked']
    assert s['corrupt'] == s['duplicated'] == s['errors'] == s['lost_acked'] == 0
    if names == 'fixed':
        assert s['delivered'] == 1


def test_plain_directory_loses_nothing_without_collisions(storm, plain_inbox):
    """The losses above are the collisions: with names that never collide
    the same storm delivers everything, so the tool counts right."""
    status, s, err = storm('--clients', 8, '--messages', 40, '--names', 'unique',
                           '--verify', plain_inbox, plain_inbox)

    assert_everything_delivered(status, s, err)
    assert_only_messages(plain_inbox, 320)


def test_plain_samba_share_loses_messages(storm, samba, plain_inbox):
    server = samba(plain_inbox)

    status, s, err = storm('--clients', 16, '--messages', 10,
                           '-U', f'{SMB_USER}%{SMB_PASSWORD}', '--verify', plain_inbox,
                           f'smb://127.0.0.1:{server.port}/inbox')

    assert status == 1, (s, err)
    assert s['sent'] == 160
    assert s['collisions'] > 0 and s['lost'] > 0
    assert s['lost'] == s['collisions']
    assert s['corrupt'] == s['duplicated'] == s['errors'] == 0


# ------------------------------------------------------------ the cure

@pytest.mark.parametrize('names,clients,messages', [('fixed', 8, 40), ('clock', 16, 40)])
def test_inboxfs_delivers_every_message(storm, mount_inboxfs, names, clients, messages):
    mount = mount_inboxfs()

    status, s, err = storm('--clients', clients, '--messages', messages, '--names', names,
                           '--verify', mount.inbox, mount.mnt, uid=STORM_UID)

    assert s is not None and s['sent'] == clients * messages, (s, err)
    assert_everything_delivered(status, s, err)
    assert s['foreign'] == 0
    assert_only_messages(mount.inbox, clients * messages)


def test_inboxfs_retry_needs_no_retries(storm, mount_inboxfs):
    mount = mount_inboxfs()

    status, s, err = storm('--clients', 4, '--messages', 25, '--names', 'fixed', '--retry',
                           '--verify', mount.inbox, mount.mnt, uid=STORM_UID)

    assert_everything_delivered(status, s, err)
    assert s['retries'] == 0


@pytest.mark.parametrize('names', ['fixed', 'clock'])
def test_samba_over_inboxfs_delivers_every_message(storm, mount_inboxfs, samba, names):
    mount = mount_inboxfs()
    server = samba(mount.mnt)

    status, s, err = storm('--clients', 4, '--messages', 25, '--names', names,
                           '-U', f'{SMB_USER}%{SMB_PASSWORD}', '--verify', mount.inbox,
                           f'smb://127.0.0.1:{server.port}/inbox')

    assert s is not None and s['sent'] == 100, (s, err)
    assert_everything_delivered(status, s, err)
    assert_only_messages(mount.inbox, 100)


@pytest.mark.long
def test_samba_over_inboxfs_storm_of_64_clients(storm, mount_inboxfs, samba):
    mount = mount_inboxfs()
    server = samba(mount.mnt)

    status, s, err = storm('--clients', 64, '--messages', 200,
                           '-U', f'{SMB_USER}%{SMB_PASSWORD}', '--verify', mount.inbox,
                           f'smb://127.0.0.1:{server.port}/inbox', timeout=1200)

    assert s is not None and s['sent'] == 64 * 200, (s, err)
    assert_everything_delivered(status, s, err)


# ------------------------------------------------------- the verification

def test_planted_corrupt_files_are_reported(storm, plain_inbox):
    size = 512
    # Headers of this run, so they count: one body that does not match
    # its hash, one message cut short, and one file that is no message.
    header = f'inbox-storm {RUN_ID} 0 3 {size} 0123456789abcdef\n'.encode()
    with open(os.path.join(plain_inbox, 'PLANTED1.SVF'), 'wb') as f:
        f.write(header + b'X' * (size - len(header)))
    with open(os.path.join(plain_inbox, 'PLANTED2.SVF'), 'wb') as f:
        f.write(header + b'X' * 10)
    with open(os.path.join(plain_inbox, 'README.txt'), 'w') as f:
        f.write('not a message\n')
    os.mkdir(os.path.join(plain_inbox, 'subdir'))

    status, s, err = storm('--clients', 1, '--messages', 10, '--size', size,
                           '--run-id', RUN_ID, '--verify', plain_inbox, plain_inbox)

    assert status == 1, (s, err)
    assert s['corrupt'] == 2, s
    # The real message 3 arrived intact beside the planted one.
    assert s['delivered'] == s['sent'] == 10
    assert s['lost'] == s['duplicated'] == 0
    assert s['foreign'] == 2    # README.txt and subdir


def test_duplicates_are_reported(storm, plain_inbox):
    """A second run under the same id drops the same messages again: each
    is then found twice. (One client, and another extension the second
    time, so that no clock-seeded name collides.)"""
    args = ('--clients', 1, '--messages', 10, '--run-id', RUN_ID, '--verify', plain_inbox,
            plain_inbox)
    status, first, err = storm(*args)
    assert status == 0, (first, err)
    assert first['delivered'] == 10

    status, second, err = storm('--ext', '.SV2', *args)

    assert status == 1, (second, err)
    assert second['delivered'] == 10
    assert second['duplicated'] == 10
    assert second['lost'] == second['corrupt'] == 0


@pytest.mark.parametrize('args', [
    [],
    ['--clients', '0', '/tmp'],
    ['--size', '10', '/tmp'],
    ['--names', 'random', '/tmp'],
    ['-n', '5', '--duration', '2', '/tmp'],
    ['--no-such-option', '/tmp'],
    ['-U', 'user%pw', '/tmp'],
    ['smb://host-without-share'],
    ['/tmp', '/var/tmp'],
])
def test_usage_errors(args):
    if not STORM or not os.access(STORM, os.X_OK):
        pytest.skip('INBOXFS_BUILD/tools/inbox-storm is not built')
    proc = subprocess.run([STORM, *args], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=TIMEOUT)

    assert proc.returncode == 2
    assert proc.stdout == ''
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith('inbox-storm: '), proc.stderr
