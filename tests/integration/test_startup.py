"""Start-up (R11, issue 2 acceptance items 6 and 7): bad input is refused
before mounting with one clear line on stderr and a non-zero exit, leaving
nothing mounted; --help and --version; the over-mount; mount(8) through
mount.fuse3 with a backgrounded daemon; a stale mount left by a killed
daemon is cleaned up by the next start."""

import errno
import os
import re
import shutil
import signal
import subprocess
import tempfile

import pytest

import helpers
from helpers import INBOXFS_BIN, SOURCE, TIMEOUT, inboxfs_daemons, mountinfo, wait_until

OPTIONS = ('observers', 'staging', 'sync', 'names', 'linger', 'client_mkdir')


# ------------------------------------------------------------------ helpers

def _read(path):
    with open(path, 'rb') as f:
        return f.read()


def _write(path, data):
    with open(path, 'wb') as f:
        f.write(data)


def _fuse_mounts(path):
    return [m for m in mountinfo(path) if m[1].startswith('fuse')]


def _kill_daemons(inbox):
    for pid in inboxfs_daemons(inbox):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def dirs(tmp_path):
    """A fresh INBOX and MOUNTPOINT (plain directories); whatever a test
    leaves mounted on them or running over them is removed afterwards."""
    inbox, mnt = tmp_path / 'inbox', tmp_path / 'mnt'
    inbox.mkdir()
    mnt.mkdir()
    yield str(inbox), str(mnt)
    for path in (str(mnt), str(inbox)):
        for _ in range(3):
            if not _fuse_mounts(path):
                break
            subprocess.run(['fusermount3', '-u', '-z', path], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=TIMEOUT)
    _kill_daemons(str(inbox))


def assert_refused(run_inboxfs, args, mnt, *, mentions=(), daemon_check=True):
    """Run the daemon with ARGS (no -f: a daemon that wrongly starts
    backgrounds itself rather than hanging the test) and check R11: a
    non-zero exit, exactly one line on stderr naming the problem, nothing
    mounted. Returns that line."""
    before = {m[0] for m in mountinfo(mnt)}
    proc = run_inboxfs(*args)
    fresh = [m for m in mountinfo(mnt) if m[0] not in before]
    if fresh:   # a wrong start: leave nothing behind
        subprocess.run(['fusermount3', '-u', '-z', mnt], stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=TIMEOUT)
    assert proc.returncode != 0, f'exit 0 for {args}: {proc.stderr!r}'
    assert not fresh, f'{args} mounted something: {fresh}'
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, f'expected one line on stderr for {args}, got {lines!r}'
    line = lines[0]
    for word in mentions:
        assert word.lower() in line.lower(), f'{line!r} does not mention {word!r}'
    assert proc.stdout.strip() == ''
    return line


# =================================================================== R11

def test_missing_inbox_is_refused(run_inboxfs, dirs):
    _, mnt = dirs
    missing = os.path.join(os.path.dirname(mnt), 'no-such-inbox')
    line = assert_refused(run_inboxfs, [missing, mnt], mnt,
                          mentions=[missing, 'no such file'])
    assert 'INBOX' in line
    assert not os.path.exists(missing)


def test_inbox_regular_file_is_refused(run_inboxfs, dirs):
    _, mnt = dirs
    regular = os.path.join(os.path.dirname(mnt), 'a-file')
    _write(regular, b'not a directory')
    assert_refused(run_inboxfs, [regular, mnt], mnt, mentions=[regular, 'not a directory'])
    assert _read(regular) == b'not a directory'


def test_unknown_option_is_refused(run_inboxfs, dirs):
    inbox, mnt = dirs
    # libfuse's own one-liner ("fuse: unknown option(s): `-o bogus=1'") is
    # accepted: it names the option.
    assert_refused(run_inboxfs, ['-o', 'bogus=1', inbox, mnt], mnt, mentions=['bogus'])
    assert_refused(run_inboxfs, ['--no-such-flag', inbox, mnt], mnt,
                   mentions=['no-such-flag'])


@pytest.mark.parametrize('option, mentions', [
    ('sync=sometimes', ['sync', 'sometimes']),
    ('names=nostem', ['names', 'nostem', '%t is required']),
    ('names=%s:%t%e', ['names', "':' is not allowed"]),
    ('names=%s~%20t%e', ['names', 'width of %t must be 4 to 13']),
    ('names=%s~%t', ['names', '%e is required']),
    ('observers=nosuchuser', ['observers', 'nosuchuser']),
    ('observers=', ['observers']),
    ('linger=-1', ['linger', '-1']),
    ('linger=soon', ['linger', 'soon']),
])
def test_malformed_option_is_refused(run_inboxfs, dirs, option, mentions):
    inbox, mnt = dirs
    assert_refused(run_inboxfs, ['-o', option, inbox, mnt], mnt, mentions=mentions)


@pytest.mark.parametrize('options, mentions', [
    ('', ['empty']),
    (' ', ['empty']),
    ('observers=root, sync=close', ['observers=root, sync=close', 'without spaces']),
    ('observers=root,', ['observers=root,', 'empty option']),
])
def test_empty_or_spaced_option_list_is_refused_by_inboxfs(run_inboxfs, dirs, options, mentions):
    """The unit passes ${INBOXFS_OPTIONS} as one argument: an empty or
    spaced value in /etc/default/inboxfs gets inboxfs's own line, naming
    -o (not libfuse's "unknown option(s)"), and exit status 2, which the
    unit does not restart on."""
    inbox, mnt = dirs
    line = assert_refused(run_inboxfs, ['-o', options, inbox, mnt], mnt,
                          mentions=['-o'] + mentions)
    assert line.startswith('inboxfs: '), line
    assert run_inboxfs('-o', options, inbox, mnt).returncode == 2


@pytest.mark.parametrize('args', [
    ['-o', 'bogus=1'], ['-o', 'sync=sometimes'], ['-o', 'uring=perhaps'], ['--no-such-flag'],
])
def test_bad_options_exit_2_and_the_unit_does_not_restart_on_it(run_inboxfs, dirs, args):
    """Bad options are not cured by a restart: status 2, which
    inboxfs@.service names in RestartPreventExitStatus=. A missing INBOX
    (a volume not mounted yet) may be: status 1, restarted."""
    inbox, mnt = dirs
    assert run_inboxfs(*args, inbox, mnt).returncode == 2
    missing = os.path.join(os.path.dirname(mnt), 'no-such-inbox')
    assert run_inboxfs(missing, mnt).returncode == 1
    with open(os.path.join(SOURCE, 'dist', 'inboxfs@.service')) as f:
        assert re.search(r'^RestartPreventExitStatus=2$', f.read(), re.M)


def test_missing_mountpoint_argument_is_refused(run_inboxfs, dirs):
    inbox, mnt = dirs
    assert_refused(run_inboxfs, [inbox], mnt, mentions=['MOUNTPOINT'])
    assert_refused(run_inboxfs, [], mnt, mentions=['INBOX'])


def test_nonexistent_mountpoint_is_refused(run_inboxfs, dirs):
    inbox, mnt = dirs
    missing = os.path.join(os.path.dirname(mnt), 'no-such-mnt')
    assert_refused(run_inboxfs, [inbox, missing], mnt, mentions=[missing])
    assert not os.path.exists(missing)


def test_mountpoint_regular_file_is_refused(run_inboxfs, dirs):
    inbox, mnt = dirs
    regular = os.path.join(os.path.dirname(mnt), 'a-file')
    _write(regular, b'x')
    assert_refused(run_inboxfs, [inbox, regular], regular, mentions=[regular])


def test_busy_mountpoint_is_refused(run_inboxfs, mount_inboxfs, tmp_path):
    m = mount_inboxfs()
    _write(os.path.join(m.mnt, 'served.svf'), b'first daemon')
    other = tmp_path / 'other-inbox'
    other.mkdir()

    line = assert_refused(run_inboxfs, [other, m.mnt], m.mnt)
    assert 'busy' in line.lower() or 'mounted' in line.lower(), line
    assert m.mnt in line

    # The first daemon still serves, alone, its own inbox.
    assert len(mountinfo(m.mnt)) == 1
    assert m.run.proc.poll() is None
    assert _read(os.path.join(m.mnt, 'served.svf')) == b'first daemon'
    assert os.listdir(other) == []
    # The same inbox again, on the same mountpoint: refused too.
    assert_refused(run_inboxfs, [m.inbox, m.mnt], m.mnt)
    assert len(mountinfo(m.mnt)) == 1


def test_staging_on_another_filesystem_is_refused(run_inboxfs, dirs):
    inbox, mnt = dirs
    if not os.path.isdir('/dev/shm') or os.stat('/dev/shm').st_dev == os.stat(inbox).st_dev:
        pytest.skip('/dev/shm is not a different filesystem from the test directory')
    staging = tempfile.mkdtemp(prefix='inboxfs-staging-', dir='/dev/shm')
    try:
        assert_refused(run_inboxfs, ['-o', f'staging={staging}', inbox, mnt], mnt,
                       mentions=['staging', 'filesystem'])
        assert os.listdir(staging) == []
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@pytest.mark.parametrize('where', ['inbox', 'inbox/', 'sub', 'new', 'sub/new', 'staging/sub',
                                   'parent'])
def test_staging_that_a_view_would_show_is_refused(run_inboxfs, dirs, where):
    """Issue 11 item 10: the inbox itself, a directory in it other than
    INBOX/.inboxfs (made or not), or a directory that contains the inbox:
    clients would get ENOENT everywhere, observers would see incomplete/."""
    inbox, mnt = dirs
    os.mkdir(os.path.join(inbox, 'sub'))
    os.mkdir(os.path.join(inbox, '.inboxfs'))
    path = {'inbox': inbox, 'inbox/': inbox + '/', 'sub': os.path.join(inbox, 'sub'),
            'new': os.path.join(inbox, 'new'), 'sub/new': os.path.join(inbox, 'sub', 'new'),
            'staging/sub': os.path.join(inbox, '.inboxfs', 'sub'),
            'parent': os.path.dirname(inbox)}[where]
    if where == 'staging/sub':
        os.mkdir(path)
    before = sorted(os.listdir(inbox))
    line = assert_refused(run_inboxfs, ['-o', f'staging={path}', inbox, mnt], mnt,
                          mentions=['staging', 'INBOX'])
    assert path in line
    assert sorted(os.listdir(inbox)) == before
    assert os.listdir(os.path.join(inbox, 'sub')) == []


def test_staging_that_is_the_default_by_name_is_accepted(mount_inboxfs, tmp_path):
    inbox = tmp_path / 'inbox'
    inbox.mkdir()
    inbox.chmod(0o1777)
    m = mount_inboxfs(str(inbox), staging=str(inbox / '.inboxfs'))
    assert sorted(os.listdir(m.mnt)) == []


def test_staging_on_same_filesystem_is_accepted(mount_inboxfs, tmp_path):
    staging = tmp_path / 'elsewhere'
    staging.mkdir()
    m = mount_inboxfs(staging=str(staging))
    _write(os.path.join(m.mnt, 'x.svf'), b'observer write')
    assert _read(os.path.join(m.inbox, 'x.svf')) == b'observer write'


# ======================================================= --help, --version

def test_help_lists_every_option(run_inboxfs):
    for flag in ('--help', '-h'):
        proc = run_inboxfs(flag)
        assert proc.returncode == 0, proc.stderr
        text = proc.stdout + proc.stderr
        for option in OPTIONS:
            assert re.search(rf'\b{option}=', text), f'{flag} does not list {option}='
        assert 'INBOX' in text and 'MOUNTPOINT' in text
        for general in ('-f', '-d', '--version'):
            assert general in text


def test_version(run_inboxfs):
    with open(os.path.join(SOURCE, 'meson.build')) as f:
        version = re.search(r"version\s*:\s*'([^']+)'", f.read()).group(1)
    for flag in ('--version', '-V'):
        proc = run_inboxfs(flag)
        assert proc.returncode == 0, proc.stderr
        assert version in proc.stdout + proc.stderr


# ============================================================== over-mount

def test_overmount_writes_land_in_the_real_directory(mount_inboxfs, tmp_path):
    inbox = tmp_path / 'inbox'
    inbox.mkdir()
    _write(inbox / 'before.svf', b'was there before the mount')
    inbox = str(inbox)

    m = mount_inboxfs(inbox=inbox, overmount=True)
    assert m.mnt == inbox and [x[1] for x in mountinfo(inbox)] == ['fuse.inboxfs']
    # The daemon reaches the directory under its own mount.
    assert _read(os.path.join(inbox, 'before.svf')) == b'was there before the mount'
    assert os.listdir(inbox) == ['before.svf'], 'staging must stay hidden'
    assert inbox in helpers.open_files(m.pid), 'the daemon holds no descriptor on the covered INBOX'

    _write(os.path.join(inbox, 'through.svf'), b'written through the mount')
    os.mkdir(os.path.join(inbox, 'sub'))
    _write(os.path.join(inbox, 'sub', 'deep.svf'), b'deep')
    _write(os.path.join(inbox, 'before.svf'), b'no clobbering here either')
    served = sorted(os.listdir(inbox))

    m.unmount()
    assert not mountinfo(inbox)
    real = sorted(e for e in os.listdir(inbox) if e != '.inboxfs')
    assert real == served
    assert _read(os.path.join(inbox, 'through.svf')) == b'written through the mount'
    assert _read(os.path.join(inbox, 'sub', 'deep.svf')) == b'deep'
    assert _read(os.path.join(inbox, 'before.svf')) == b'was there before the mount'
    rewrites = [n for n in real if re.match(r'before~[0-9A-Za-z]+\.svf$', n)]
    assert len(rewrites) == 1
    assert _read(os.path.join(inbox, rewrites[0])) == b'no clobbering here either'


# =========================================================== mount(8) paths

_MOUNT_SCRIPT = r'''
set -u
echo "script $$"
# Private mount namespace: put a directory holding "inboxfs" first on the
# default PATH that mount.fuse3's shell uses (mount(8) drops the caller's
# PATH before running helpers).
mount --bind "$BINDIR" /usr/local/sbin || exit 20
mount -t fuse.inboxfs "$INBOX" "$MNT" -o observers=root || exit 21
grep -q " $MNT [^-]* - fuse.inboxfs " /proc/self/mountinfo || exit 22
for d in /proc/[0-9]*; do
    [ "$(cat "$d/comm" 2>/dev/null)" = inboxfs ] || continue
    tr '\0' '\n' < "$d/cmdline" 2>/dev/null | grep -qxF "$INBOX" || continue
    echo "daemon ${d#/proc/} $(cut -d' ' -f4 "$d/stat")"
done
cat "$MNT/before.svf" || exit 23
echo
echo through mount > "$MNT/through.svf" || exit 24
ls -a "$MNT"
fusermount3 -u "$MNT" || exit 25
echo unmounted
'''


def _helper_path_dir(tmp_path):
    bindir = tmp_path / 'bin'
    bindir.mkdir()
    os.symlink(os.path.abspath(INBOXFS_BIN), bindir / 'inboxfs')
    return str(bindir)


def _require_mount_tools(*tools):
    helpers_missing = [t for t in tools if not shutil.which(t)]
    if helpers_missing:
        pytest.skip(f'missing {", ".join(helpers_missing)}')
    reason = helpers.fuse_prerequisites()
    if reason:
        pytest.skip(reason)
    if helpers.WRAPPER:
        pytest.skip('mount(8) runs the daemon itself, not under INBOXFS_WRAPPER')


def test_mount_t_fuse_inboxfs_backgrounds_and_unmounts(dirs, tmp_path):
    """`mount -t fuse.inboxfs INBOX MNT -o observers=root` (what an fstab
    line does) through mount.fuse3: mount returns once mounted, the daemon
    runs on in the background, and exits when unmounted. Runs in a private
    mount namespace (unshare -m) so /usr/local/sbin can hold the binary."""
    _require_mount_tools('mount', 'mount.fuse3', 'unshare', 'fusermount3')
    inbox, mnt = dirs
    _write(os.path.join(inbox, 'before.svf'), b'pre-existing')
    env = dict(os.environ, BINDIR=_helper_path_dir(tmp_path), INBOX=inbox, MNT=mnt)

    proc = subprocess.run(['unshare', '-m', '/bin/sh', '-c', _MOUNT_SCRIPT], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=TIMEOUT * 3)
    out = proc.stdout
    assert proc.returncode == 0, f'step {proc.returncode} failed:\n{out}{proc.stderr}'
    daemons = [l.split()[1:] for l in out.splitlines() if l.startswith('daemon ')]
    assert len(daemons) == 1, f'expected one backgrounded daemon, saw {daemons}\n{out}'
    pid, ppid = map(int, daemons[0])
    script = int(next(l.split()[1] for l in out.splitlines() if l.startswith('script ')))
    assert 'pre-existing' in out
    assert '.inboxfs' not in out.split()
    assert 'unmounted' in out
    # The daemon was not mount's child any more (it backgrounded itself)
    # and it exits after the unmount.
    assert ppid not in (script, os.getpid())
    try:
        wait_until(lambda: pid not in inboxfs_daemons(inbox), what='the daemon to exit')
    finally:
        _kill_daemons(inbox)
    assert _read(os.path.join(inbox, 'through.svf')) == b'through mount\n'
    assert not _fuse_mounts(mnt)


def test_mount_fuse3_helper_with_path(dirs, tmp_path):
    """mount.fuse3 run as mount(8) runs it, with the binary found on PATH,
    in this namespace: mounted when it returns, daemon in the background;
    fusermount3 -u stops it."""
    _require_mount_tools('mount.fuse3', 'fusermount3')
    inbox, mnt = dirs
    _write(os.path.join(inbox, 'before.svf'), b'pre-existing')
    env = dict(os.environ, PATH=_helper_path_dir(tmp_path) + ':' + os.environ['PATH'])
    helper = shutil.which('mount.fuse3')

    try:
        proc = subprocess.run([helper, inbox, mnt, '-o', 'rw,observers=root',
                               '-t', 'fuse.inboxfs'], env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=TIMEOUT * 3)
        assert proc.returncode == 0, proc.stderr
        assert [x[1] for x in mountinfo(mnt)] == ['fuse.inboxfs'], \
            'not mounted when mount.fuse3 returned'
        daemons = inboxfs_daemons(inbox)
        assert len(daemons) == 1, daemons
        pid = daemons[0]
        assert _read(os.path.join(mnt, 'before.svf')) == b'pre-existing'
        _write(os.path.join(mnt, 'through.svf'), b'through mount')
        assert sorted(os.listdir(mnt)) == ['before.svf', 'through.svf']

        unmount = subprocess.run(['fusermount3', '-u', mnt], stdin=subprocess.DEVNULL,
                                 capture_output=True, text=True, timeout=TIMEOUT)
        assert unmount.returncode == 0, unmount.stderr
        wait_until(lambda: pid not in inboxfs_daemons(inbox), what='the daemon to exit')
    finally:
        if _fuse_mounts(mnt):
            subprocess.run(['fusermount3', '-u', '-z', mnt], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=TIMEOUT)
        _kill_daemons(inbox)
    assert _read(os.path.join(inbox, 'through.svf')) == b'through mount'
    assert not _fuse_mounts(mnt)


# ============================================================ stale mounts

def _inboxfs_devices(path):
    """st_dev values of the fuse.inboxfs mounts on PATH (mountinfo's
    major:minor field)."""
    path = os.path.realpath(path)
    devs = set()
    with open('/proc/self/mountinfo') as f:
        for line in f:
            left, _, right = line.partition(' - ')
            fields = left.split()
            point = re.sub(r'\\([0-7]{3})', lambda g: chr(int(g.group(1), 8)), fields[4])
            if point == path and right.split()[0] == 'fuse.inboxfs':
                major, minor = map(int, fields[2].split(':'))
                devs.add(os.makedev(major, minor))
    return devs


def restart_over_stale_mount(m, timeout=TIMEOUT):
    """Start a new daemon over M's stale mount and wait until a live mount
    answers there. (Mount.start(wait=True) waits for a mount id it has not
    seen before, but the kernel recycles the id of the stale mount the new
    daemon detaches, so the fresh mount often carries the same id. Here the
    mountpoint itself is asked: a stale mount answers statfs with ENOTCONN,
    and what answers must be an inboxfs mount, not the plain directory
    seen between the detach and the new mount.)"""
    m.start(wait=False)
    run = m.run

    def live():
        assert run.proc.poll() is None, \
            f'inboxfs exited with status {run.proc.poll()}\n{run.log()}'
        try:
            # statfs always reaches the daemon (stat may be answered from
            # the kernel's attribute cache, even on a dead mount); then the
            # object there must be an inboxfs root.
            os.statvfs(m.mnt)
            st = os.stat(m.mnt)
        except OSError as e:
            if e.errno in (errno.ENOTCONN, errno.ECONNABORTED):
                return False
            raise
        return st.st_dev in _inboxfs_devices(m.mnt)

    wait_until(live, timeout, what=f'a live mount on {m.mnt}')


def test_stale_mount_is_cleaned_up_by_next_start(mount_inboxfs):
    m = mount_inboxfs()
    _write(os.path.join(m.mnt, 'before.svf'), b'written before the crash')

    m.crash(signal.SIGKILL)
    with pytest.raises(OSError) as e:
        os.statvfs(m.mnt)   # stat may still be answered from the cache
    # ECONNABORTED: a request that came while the kernel tore down a dead
    # daemon's io_uring queues.
    assert e.value.errno in (errno.ENOTCONN, errno.ECONNABORTED)
    assert m.mounted(), 'the killed daemon left no stale mount to clean up'

    restart_over_stale_mount(m)

    assert len(mountinfo(m.mnt)) == 1, f'the stale mount is still there: {mountinfo(m.mnt)}'
    assert _read(os.path.join(m.mnt, 'before.svf')) == b'written before the crash'
    _write(os.path.join(m.mnt, 'after.svf'), b'written after the restart')
    assert _read(os.path.join(m.inbox, 'after.svf')) == b'written after the restart'
    assert sorted(os.listdir(m.mnt)) == ['after.svf', 'before.svf']


def test_stale_overmount_is_cleaned_up_by_next_start(mount_inboxfs, tmp_path):
    inbox = tmp_path / 'inbox'
    inbox.mkdir()
    _write(inbox / 'before.svf', b'kept')
    m = mount_inboxfs(inbox=str(inbox), overmount=True)

    m.crash(signal.SIGKILL)
    with pytest.raises(OSError) as e:
        os.listdir(m.mnt)
    assert e.value.errno in (errno.ENOTCONN, errno.ECONNABORTED)   # see above

    restart_over_stale_mount(m)

    assert len(mountinfo(m.mnt)) == 1
    assert os.listdir(m.mnt) == ['before.svf']
    _write(os.path.join(m.mnt, 'after.svf'), b'after')
    m.unmount()
    assert sorted(e for e in os.listdir(inbox) if e != '.inboxfs') == ['after.svf', 'before.svf']
