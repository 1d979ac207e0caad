"""Start-up (R11; R6's stale mount): bad input is refused
before mounting with one clear line on stderr and a non-zero exit, leaving
nothing mounted; --help and --version; the over-mount; mount(8) through
mount.fuse3 with a backgrounded daemon; a stale mount left by a killed
daemon is cleaned up by the next start."""

import errno
import os
import re
import shutil
import signal
import stat
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
    """staging=DIR on another filesystem (/dev/shm) than the inbox: R11's
    one line naming it, nothing mounted, nothing written in either."""
    inbox, mnt = dirs
    if not os.path.isdir('/dev/shm') or os.stat('/dev/shm').st_dev == os.stat(inbox).st_dev:
        pytest.skip('/dev/shm is not a different filesystem from the test directory')
    staging = tempfile.mkdtemp(prefix='inboxfs-staging-', dir='/dev/shm')
    try:
        assert_refused(run_inboxfs, ['-o', f'staging={staging}', inbox, mnt], mnt,
                       mentions=['staging', 'filesystem'])
        assert os.listdir(staging) == [] and os.listdir(inbox) == []
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@pytest.mark.parametrize('where', ['inbox', 'inbox/', 'sub', 'new', 'sub/new', 'staging/sub',
                                   'parent'])
def test_staging_that_a_view_would_show_is_refused(run_inboxfs, dirs, where):
    """R2 and R11: staging= at the inbox itself, a directory in it other than
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

def test_stale_mount_is_cleaned_up_by_next_start(mount_inboxfs):
    m = mount_inboxfs()
    _write(os.path.join(m.mnt, 'before.svf'), b'written before the crash')

    m.crash(signal.SIGKILL)
    with pytest.raises(OSError) as e:
        os.statvfs(m.mnt)   # stat may still be answered from the cache
    # ECONNABORTED or ECANCELED: a request that came while the kernel tore
    # down a dead daemon's io_uring queues.
    assert e.value.errno in (errno.ENOTCONN, errno.ECONNABORTED, errno.ECANCELED)
    assert m.mounted(), 'the killed daemon left no stale mount to clean up'

    m.recover()

    assert len(mountinfo(m.mnt)) == 1, f'the stale mount is still there: {mountinfo(m.mnt)}'
    assert _read(os.path.join(m.mnt, 'before.svf')) == b'written before the crash'
    _write(os.path.join(m.mnt, 'after.svf'), b'written after the restart')
    assert _read(os.path.join(m.inbox, 'after.svf')) == b'written after the restart'
    assert sorted(os.listdir(m.mnt)) == ['after.svf', 'before.svf']


def test_the_daemon_holds_one_descriptor_of_the_directory_under_the_mount(mount_inboxfs):
    """The start-up checks open MOUNTPOINT to see it is a directory and
    close it; what stays open is the covered directory's watcher's
    (covered.c), one descriptor. A check that leaves its own open holds
    the bare directory for the daemon's life, out of every budget."""
    m = mount_inboxfs()
    mnt = os.path.realpath(m.mnt)
    held = [t for t in helpers.open_files(m.pid) if t == mnt]
    assert len(held) == 1, helpers.open_files(m.pid)


def test_stale_overmount_is_cleaned_up_by_next_start(mount_inboxfs, tmp_path):
    inbox = tmp_path / 'inbox'
    inbox.mkdir()
    _write(inbox / 'before.svf', b'kept')
    m = mount_inboxfs(inbox=str(inbox), overmount=True)

    m.crash(signal.SIGKILL)
    with pytest.raises(OSError) as e:
        os.listdir(m.mnt)
    assert e.value.errno in (errno.ENOTCONN, errno.ECONNABORTED, errno.ECANCELED)   # see above

    m.recover()

    assert len(mountinfo(m.mnt)) == 1
    assert os.listdir(m.mnt) == ['before.svf']
    _write(os.path.join(m.mnt, 'after.svf'), b'after')
    m.unmount()
    assert sorted(e for e in os.listdir(inbox) if e != '.inboxfs') == ['after.svf', 'before.svf']


# ============================================ the bare mountpoint (R4, R6)
#
# While inboxfs is down, MOUNTPOINT is a plain directory: whatever a writer
# manages to put there (an administrator gave the share's directory to the
# client account) was acknowledged to it, and the next mount would hide it.
# At start, before mounting, inboxfs delivers such files into the inbox as
# recovery delivers acknowledged drops, or refuses to serve when it cannot.

@pytest.fixture
def mount_at(request):
    """Factory: mount_at(inbox, mnt, wait=True, **options) starts inboxfs
    over INBOX on the given, already populated MNT (mount_inboxfs makes a
    fresh empty one). Unmounted and checked at teardown."""
    mounts = []

    def factory(inbox, mnt, wait=True, **options):
        reason = helpers.fuse_prerequisites()
        if reason:
            pytest.skip(reason)
        base = helpers.make_base_dir('inboxfs-test-')
        m = helpers.Mount(base, str(inbox), str(mnt), options)
        mounts.append(m)
        return m.start(wait=wait)

    yield factory
    problems = []
    for m in reversed(mounts):
        try:
            m.cleanup()
        except (AssertionError, OSError, TimeoutError) as e:
            problems.append(str(e))
        if not problems:
            shutil.rmtree(m.base, ignore_errors=True)
    if problems:
        pytest.fail('\n'.join(problems), pytrace=False)


@pytest.fixture
def drop_dirs():
    """INBOX (1777, as the fixtures make it) and MOUNTPOINT (root, 0755:
    nobody else may write it) in a directory smbd's account can reach."""
    base = helpers.make_base_dir('inboxfs-drop-')
    inbox, mnt = os.path.join(base, 'inbox'), os.path.join(base, 'inbox.drop')
    os.mkdir(inbox)
    os.chmod(inbox, 0o1777)
    os.mkdir(mnt)
    os.chmod(mnt, 0o755)
    yield inbox, mnt
    if not helpers.mounted_under(base):
        shutil.rmtree(base, ignore_errors=True)


def _files_below(top):
    """{relative path: content} of the regular files below TOP, staging
    excluded (symlinks, FIFOs and sockets are no files: never opened)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(top):
        if dirpath == top and '.inboxfs' in dirnames:
            dirnames.remove('.inboxfs')
        for name in filenames:
            path = os.path.join(dirpath, name)
            if stat.S_ISREG(os.lstat(path).st_mode):
                found[os.path.relpath(path, top)] = _read(path)
    return found


def test_files_left_in_the_mountpoint_are_delivered_at_start(drop_dirs, mount_at):
    inbox, mnt = drop_dirs
    _write(os.path.join(inbox, 'taken.txt'), b'already in the inbox')
    _write(os.path.join(mnt, 'free.txt'), b'written while inboxfs was down')
    _write(os.path.join(mnt, 'taken.txt'), b'same name, another message')
    _write(os.path.join(mnt, 'empty.txt'), b'')
    os.chmod(mnt, 0o555)

    m = mount_at(inbox, mnt)
    found = _files_below(inbox)
    assert found.pop('free.txt') == b'written while inboxfs was down'
    assert found.pop('taken.txt') == b'already in the inbox'
    assert found.pop('empty.txt') == b''
    [(unique, data)] = found.items()
    assert re.fullmatch(rf'taken~{helpers.TAG}+\.txt', unique), unique
    assert data == b'same name, another message'
    log = m.log()
    for name, final in (('free.txt', 'free.txt'), ('taken.txt', unique),
                        ('empty.txt', 'empty.txt')):
        assert re.search(rf' info: mountpoint: delivered "{re.escape(name)}"'
                         rf'.* as "{re.escape(final)}"', log), log
    assert helpers.read_stats(mnt)['recoveries'] == 3
    # Served as usual, and the directory under the mount is empty again.
    assert sorted(os.listdir(mnt)) == ['empty.txt', 'free.txt', 'taken.txt', unique]
    m.unmount()
    assert os.listdir(mnt) == []
    assert len(_files_below(inbox)) == 4

    # The next start finds nothing to deliver and says nothing about it.
    m.start()
    assert 'mountpoint:' not in m.log()


def test_mountpoint_subdirectories_map_onto_the_inbox(drop_dirs, mount_at):
    """A file in MOUNTPOINT/sub goes to INBOX/sub when that is a directory,
    else to the top, as recovery does for a drop whose directory is gone;
    the directories stay."""
    inbox, mnt = drop_dirs
    os.makedirs(os.path.join(inbox, 'sub', 'deeper'))
    os.symlink('sub', os.path.join(inbox, 'alias'))        # never followed
    for rel, data in (('sub/a.txt', b'a'), ('sub/deeper/b.txt', b'b'),
                      ('gone/c.txt', b'c'), ('sub/gone/d.txt', b'd'),
                      ('alias/e.txt', b'e'), ('.inboxfs/f.txt', b'f')):
        os.makedirs(os.path.dirname(os.path.join(mnt, rel)), exist_ok=True)
        _write(os.path.join(mnt, rel), data)

    m = mount_at(inbox, mnt)
    assert _files_below(inbox) == {'sub/a.txt': b'a', 'sub/deeper/b.txt': b'b',
                                   'c.txt': b'c', 'd.txt': b'd', 'e.txt': b'e',
                                   'f.txt': b'f'}
    assert re.search(r'mountpoint: delivered "gone/c.txt".* as "c.txt"', m.log()), m.log()
    m.unmount()
    assert sorted(os.listdir(mnt)) == ['.inboxfs', 'alias', 'gone', 'sub']
    assert _files_below(mnt) == {}
    assert os.listdir(os.path.join(inbox, '.inboxfs', 'incomplete')) == []


@pytest.mark.parametrize('what', ['symlink', 'fifo', 'socket', 'open for writing'])
def test_mountpoint_holding_what_cannot_be_delivered_is_refused(run_inboxfs, drop_dirs,
                                                                what):
    """One line naming it, a non-zero exit, nothing mounted, nothing
    moved: the administrator decides."""
    inbox, mnt = drop_dirs
    _write(os.path.join(mnt, 'fine.txt'), b'deliverable')
    os.mkdir(os.path.join(mnt, 'sub'))
    odd = os.path.join(mnt, 'sub', 'odd')
    holder = None
    if what == 'symlink':
        os.symlink('/etc/passwd', odd)
    elif what == 'fifo':
        os.mkfifo(odd)
    elif what == 'socket':
        import socket
        holder = socket.socket(socket.AF_UNIX)
        holder.bind(odd)
    else:
        holder = open(odd, 'wb')            # a writer still at it
        holder.write(b'half a mess')
        holder.flush()
    try:
        line = assert_refused(run_inboxfs, [inbox, mnt], mnt,
                              mentions=['MOUNTPOINT', 'sub/odd'])
    finally:
        if holder is not None:
            holder.close()
    assert what.split()[0] in line.lower()
    assert 'fine.txt' not in line
    assert sorted(_files_below(mnt)) == (['fine.txt'] if what != 'open for writing'
                                         else ['fine.txt', 'sub/odd'])
    assert os.path.lexists(odd)
    assert _files_below(inbox) == {}


def test_mountpoint_on_another_filesystem_holding_a_file_is_refused(run_inboxfs, drop_dirs,
                                                                   loop_fs):
    """Nothing there can be moved into the inbox atomically: refused, the
    file untouched. (An empty one is fine: test_empty_mountpoint_...)"""
    fs = loop_fs()
    _, mnt = drop_dirs
    assert os.stat(mnt).st_dev != os.stat(fs.inbox).st_dev
    _write(os.path.join(mnt, 'stray.txt'), b'acknowledged while down')
    line = assert_refused(run_inboxfs, [fs.inbox, mnt], mnt,
                          mentions=['MOUNTPOINT', 'stray.txt', 'filesystem'])
    assert mnt in line
    assert _files_below(mnt) == {'stray.txt': b'acknowledged while down'}
    assert _files_below(fs.inbox) == {}


def _mountpoint_warnings(log):
    return [l for l in log.splitlines() if 'MOUNTPOINT' in l and ' warning: ' in l]


@pytest.mark.parametrize('how', ['mode 0777', 'mode 0575', 'owner'])
def test_a_mountpoint_others_can_write_is_warned_about(drop_dirs, mount_at, how):
    inbox, mnt = drop_dirs
    if how == 'owner':
        os.chmod(mnt, 0o555)
        os.chown(mnt, helpers.CLIENT_UID, helpers.CLIENT_UID)
    else:
        os.chmod(mnt, int(how.split()[1], 8))
    m = mount_at(inbox, mnt)
    [line] = _mountpoint_warnings(m.log())
    assert mnt in line and '0555' in line and 'root' in line
    assert ('uid 60001' if how == 'owner' else how.split()[1][1:]) in line


def test_empty_read_only_root_mountpoint_is_not_warned_about(drop_dirs, mount_at, loop_fs):
    inbox, mnt = drop_dirs
    os.chmod(mnt, 0o555)
    m = mount_at(inbox, mnt)
    assert _mountpoint_warnings(m.log()) == []
    assert 'mountpoint:' not in m.log()
    # On another filesystem than INBOX too, when there is nothing in it.
    fs = loop_fs()
    other_mnt = mnt + '2'
    os.mkdir(other_mnt)
    os.chmod(other_mnt, 0o555)
    other = fs.uses(mount_at(fs.inbox, other_mnt))
    assert _mountpoint_warnings(other.log()) == []


def test_the_over_mount_is_not_a_mountpoint_to_sweep(mount_inboxfs, tmp_path):
    """INBOX itself as MOUNTPOINT: its files are the inbox, and it is
    writable by design."""
    inbox = tmp_path / 'inbox'
    inbox.mkdir()
    inbox.chmod(0o1777)
    _write(inbox / 'kept.txt', b'kept')
    m = mount_inboxfs(inbox=str(inbox), overmount=True)
    assert os.listdir(m.mnt) == ['kept.txt']
    assert 'mountpoint:' not in m.log() and _mountpoint_warnings(m.log()) == []


def test_new_administrator_gives_the_share_to_the_client_account(drop_dirs, mount_at, samba):
    """R6 for the bare mountpoint, as it happened: during an outage the share's
    directory was given to the client account to "fix" ACCESS_DENIED, an
    SMB put succeeded, and the restart's mount hid the message. Now the
    start delivers it, and warns about the mountpoint."""
    inbox, mnt = drop_dirs
    os.chmod(mnt, 0o555)
    helpers.ensure_system_user(helpers.SMB_FORCE_USER)
    server = samba(mnt)            # the shipped config, over the bare directory
    message = os.path.join(os.path.dirname(mnt), 'local.txt')
    _write(message, b'report of the night, acknowledged')
    with pytest.raises(AssertionError, match='ACCESS_DENIED'):
        server.smbclient_put(message, 'REPORT.TXT')
    import pwd
    acct = pwd.getpwnam(helpers.SMB_FORCE_USER)
    os.chown(mnt, acct.pw_uid, acct.pw_gid)          # the "fix"
    os.chmod(mnt, 0o755)
    server.smbclient_put(message, 'REPORT.TXT')
    assert os.listdir(mnt) == ['REPORT.TXT']

    m = mount_at(inbox, mnt)                          # inboxfs is back
    assert _files_below(inbox) == {'REPORT.TXT': b'report of the night, acknowledged'}
    assert os.stat(os.path.join(inbox, 'REPORT.TXT')).st_uid == acct.pw_uid
    [warning] = _mountpoint_warnings(m.log())
    assert f'uid {acct.pw_uid}' in warning
    # Through the mount, the client's share works as ever.
    server.smbclient_put(message, 'REPORT.TXT')
    assert len(_files_below(inbox)) == 2


def test_a_connection_made_during_the_outage_writes_through_the_mount_after_start(
        drop_dirs, mount_at, samba):
    """An SMB connection made to the bare directory and kept across the
    start: what it created before is delivered, and its next create goes
    through the mount (smbd resolves the share's path again), not into the
    directory under it."""
    inbox, mnt = drop_dirs
    import pwd
    acct = pwd.getpwnam(helpers.SMB_FORCE_USER)
    os.chown(mnt, acct.pw_uid, acct.pw_gid)
    server = samba(mnt)
    conn = server.connect()
    assert conn.create_new('BEFORE.TXT', b'before the start') == helpers.STATUS_SUCCESS

    m = mount_at(inbox, mnt)
    assert conn.create_new('AFTER.TXT', b'after the start') == helpers.STATUS_SUCCESS
    assert conn.create_new('BEFORE.TXT', b'same name again') == helpers.STATUS_SUCCESS
    conn.disconnect()
    found = _files_below(inbox)
    assert found.pop('BEFORE.TXT') == b'before the start'
    assert found.pop('AFTER.TXT') == b'after the start'
    assert list(found.values()) == [b'same name again']
    m.unmount()
    assert _files_below(mnt) == {}


_KEPT_CWD = r'''
import sys
sys.stdin.readline()
with open('late.txt', 'wb') as f:            # relative: the directory under the mount
    f.write(b'written under the mount')
busy = open('busy.txt', 'wb')
busy.write(b'half')
busy.flush()
print('open', flush=True)
sys.stdin.readline()
busy.write(b' and all')
busy.close()
print('closed', flush=True)
sys.stdin.readline()
'''


def test_what_reaches_the_directory_under_the_mount_is_delivered_while_serving(
        drop_dirs, mount_at):
    """A process whose working directory is the bare mountpoint from before
    the mount keeps writing there, under the mount: the daemon watches that
    directory while it serves and delivers what it finds; a file still open
    for writing is named in a warning, and delivered once closed."""
    import subprocess
    import sys
    inbox, mnt = drop_dirs
    proc = subprocess.Popen([sys.executable, '-c', _KEPT_CWD], cwd=mnt, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        m = mount_at(inbox, mnt)
        proc.stdin.write('go\n')
        proc.stdin.flush()
        assert proc.stdout.readline() == 'open\n'
        wait_until(lambda: 'late.txt' in _files_below(inbox), TIMEOUT * 2,
                   what='late.txt delivered from under the mount')
        assert _files_below(inbox) == {'late.txt': b'written under the mount'}
        wait_until(lambda: re.search(r'warning: mountpoint: under the mount.*busy\.txt '
                                     r'\(open for writing\)', m.log()), TIMEOUT * 2,
                   what='the warning about busy.txt')
        proc.stdin.write('go\n')
        proc.stdin.flush()
        assert proc.stdout.readline() == 'closed\n'
        wait_until(lambda: 'busy.txt' in _files_below(inbox), TIMEOUT * 2,
                   what='busy.txt delivered once closed')
        assert _files_below(inbox)['busy.txt'] == b'half and all'
        assert len(re.findall(r'under the mount, what cannot', m.log())) == 1
        assert re.search(r'info: mountpoint: delivered "late.txt"', m.log())
    finally:
        proc.stdin.close()
        proc.wait(timeout=TIMEOUT)
    m.unmount()
    assert _files_below(mnt) == {}


_REOPENED_UNDER_THE_LEASE = r'''
import os, sys, time
sys.stdin.readline()
with open('one.txt', 'wb') as f:             # relative: the directory under the mount
    f.write(b'first')
ino = os.stat('one.txt').st_ino


def leased():
    with open('/proc/locks') as f:
        for line in f:
            if ' LEASE ' in line:
                dev_ino = [p for p in line.split() if p.count(':') == 2]
                if dev_ino and dev_ino[0].rsplit(':', 1)[1] == str(ino):
                    return True
    return False


deadline = time.monotonic() + 60
while not leased():
    if time.monotonic() > deadline:
        print('no lease seen', flush=True)
        sys.exit(1)
    time.sleep(0.005)
fd = os.open('one.txt', os.O_WRONLY | os.O_APPEND)  # waits for the lease's release
still_here = os.path.exists('one.txt')
os.write(fd, b' and more')
os.close(fd)
print('here' if still_here else 'delivered under me', flush=True)
'''


def test_a_file_reopened_for_writing_while_the_watcher_delivers_it_stays(
        drop_dirs, mount_at, tmp_path, monkeypatch):
    """The watcher holds a read lease on a file under the mount while it
    makes it durable (sync=close: its fsync, slowed here to 1.5 s) and
    delivers it. A process that opens it for writing meanwhile waits for
    the lease: the watcher sees the lease being broken and leaves the file
    where it is, to be delivered once written, instead of moving it into
    the inbox while its writer's open returns on it there (which then
    wrote into a delivered message)."""
    import sys
    from test_transport import SLOW_FSYNC
    src, lib = tmp_path / 'slowfsync.c', tmp_path / 'slowfsync.so'
    src.write_text(SLOW_FSYNC)
    subprocess.run(['cc', '-shared', '-fPIC', '-o', str(lib), str(src), '-ldl'], check=True,
                   timeout=TIMEOUT * 6)
    monkeypatch.setattr(helpers, 'WRAPPER', [
        'env', f'LD_PRELOAD={lib}', 'INBOXFS_SLOW_FSYNC_MS=1500',
        'ASAN_OPTIONS=verify_asan_link_order=0:detect_leaks=1'] + helpers.WRAPPER)
    inbox, mnt = drop_dirs
    proc = subprocess.Popen([sys.executable, '-c', _REOPENED_UNDER_THE_LEASE], cwd=mnt,
                            text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        m = mount_at(inbox, mnt, sync='close')
        proc.stdin.write('go\n')
        proc.stdin.flush()
        assert proc.stdout.readline() == 'here\n'
        wait_until(lambda: 'one.txt' in _files_below(inbox), TIMEOUT * 2,
                   what='one.txt delivered once written')
        assert _files_below(inbox) == {'one.txt': b'first and more'}
    finally:
        proc.stdin.close()
        proc.wait(timeout=TIMEOUT * 6)
    m.unmount()
    assert _files_below(mnt) == {}
