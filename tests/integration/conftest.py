"""Fixtures for the integration tests, after libfuse's test/util.py: the
daemon runs in the foreground, the mount is awaited with a deadline while
the process is watched, and teardown always unmounts, stops the daemon and
checks its exit status and log. The machinery lives in the
package helpers/."""

import os
import shutil

import pytest

import helpers
from helpers import Client, Mount, Samba


def pytest_configure(config):
    config.addinivalue_line(
        'markers', 'long: storms and benchmarks, run only with INBOXFS_LONG=1 '
        '(tools/test --long)')


def pytest_collection_modifyitems(config, items):
    if helpers.LONG:
        return
    skip = pytest.mark.skip(reason='long test: set INBOXFS_LONG=1 (tools/test --long)')
    for item in items:
        if 'long' in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test shows the logs of the daemons and smbd it used."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when == 'call':
        for title, text in getattr(item, '_inboxfs_logs', {}).items():
            report.sections.append((title, text()))


def _attach_log(request, title, text):
    if not hasattr(request.node, '_inboxfs_logs'):
        request.node._inboxfs_logs = {}
    request.node._inboxfs_logs[title] = text


def _remove(bases, failed):
    if failed or os.environ.get('INBOXFS_KEEP'):
        return
    for base in bases:
        # Never walk into something still mounted.
        if not helpers.mounted_under(base):
            shutil.rmtree(base, ignore_errors=True)


def require_fuse():
    reason = helpers.fuse_prerequisites()
    if reason:
        pytest.skip(reason)


def require_samba():
    reason = helpers.samba_prerequisites()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def plain_inbox():
    """A fresh plain directory, writable by anyone (mode 1777), that clients
    and smbd's force user can reach."""
    base = helpers.make_base_dir('inboxfs-plain-')
    inbox = os.path.join(base, 'inbox')
    os.mkdir(inbox)
    os.chmod(inbox, 0o1777)
    yield inbox
    _remove([base], False)


@pytest.fixture
def mount_inboxfs(request):
    """Factory: mount_inboxfs(inbox=None, *, overmount=False, debug=False,
    args=(), wait=True, **options) starts `inboxfs -f -o OPTIONS INBOX MNT`
    and returns a helpers.Mount (attributes inbox, mnt; methods restart(),
    crash() and recover(), unmount(), allow_log(), backing_files()). Options are
    key=value (True: a bare flag). Without inbox, a fresh one (mode 1777);
    give another mount's inbox to run two daemons over one inbox. Every
    mount is unmounted and checked at teardown."""
    mounts, bases = [], []

    def factory(inbox=None, *, overmount=False, debug=False, args=(), wait=True,
                **options):
        require_fuse()
        base = helpers.make_base_dir('inboxfs-test-')
        bases.append(base)
        if inbox is None:
            inbox = os.path.join(base, 'inbox')
            os.mkdir(inbox)
            os.chmod(inbox, 0o1777)
        if overmount:
            mnt = inbox
        else:
            mnt = os.path.join(base, 'mnt')
            os.mkdir(mnt)
        mount = Mount(base, inbox, mnt, options, debug=debug, args=args)
        mounts.append(mount)
        _attach_log(request, f'inboxfs log ({base})', mount.logs)
        return mount.start(wait=wait)

    yield factory

    problems = []
    for mount in reversed(mounts):
        try:
            mount.cleanup()
        except (AssertionError, OSError, TimeoutError) as e:
            problems.append(str(e))
    _remove(bases, bool(problems))
    if problems:
        pytest.fail('\n'.join(problems), pytrace=False)


@pytest.fixture
def mounted(mount_inboxfs):
    """inboxfs with default options over a fresh inbox."""
    return mount_inboxfs()


@pytest.fixture
def m(mounted):
    """The observer tests' short name for `mounted` (test_observer*.py)."""
    return mounted


@pytest.fixture
def run_inboxfs():
    """run_inboxfs(*args) runs the daemon to completion (bad input,
    --help): a CompletedProcess with text output."""
    if not helpers.INBOXFS_BIN or not os.access(helpers.INBOXFS_BIN, os.X_OK):
        pytest.skip('INBOXFS_BIN is not set or not executable')
    return helpers.run_inboxfs


@pytest.fixture
def as_client(mount_inboxfs):
    """Factory: as_client(uid=60001, gid=None) returns a helpers.Client:
    .run(cmd) and .popen(cmd) run commands as that uid, .call(fn, ...) runs
    a function in a forked child as that uid, .session() keeps one process
    (one inboxfs session) alive. Sessions end before any mount is torn
    down (this fixture depends on mount_inboxfs for that order)."""
    sessions = []

    class TrackedClient(Client):
        def session(self):
            s = super().session()
            sessions.append(s)
            return s

    def factory(uid=helpers.CLIENT_UID, gid=None):
        if os.geteuid() != 0:
            pytest.skip('switching to client uids needs root')
        return TrackedClient(uid, gid)

    yield factory
    for s in sessions:
        s.end()


@pytest.fixture
def client(as_client):
    """The client uid 60001."""
    return as_client()


@pytest.fixture
def samba(request, mount_inboxfs):
    """Factory: samba(share_path, **share_options) starts a private smbd on
    127.0.0.1 (a free high port, .port) exporting share_path as
    //127.0.0.1/inbox from dist/samba/smb.conf, SMB user inboxtest%inboxtest
    forced to the account inboxfs-smb. Returns a helpers.Samba:
    smbclient_put(), smbclient(), smb_create_new(), connect(). Extra
    share options are given with spaces as underscores
    (case_sensitive='no'). consumer_path= adds the consumer's share
    //127.0.0.1/consumer there (SMB user inboxconsumer%inboxconsumer, as
    itself); smb1=True turns on the lines dist/samba/smb.conf shows for SMB1
    clients. smbd stops before any mount is torn down."""
    servers, bases = [], []

    def factory(share_path, *, consumer_path=None, smb1=False, **share_options):
        require_samba()
        base = helpers.make_base_dir('inboxfs-smb-')
        bases.append(base)
        options = {k.replace('_', ' '): v for k, v in share_options.items()}
        server = Samba(os.fspath(share_path), base, share_options=options,
                       consumer_path=consumer_path and os.fspath(consumer_path),
                       smb1=smb1)
        servers.append(server)
        _attach_log(request, f'smbd log ({base})', server.log)
        return server.start()

    yield factory

    problems = []
    for server in reversed(servers):
        try:
            server.stop()
        except (AssertionError, OSError, TimeoutError) as e:
            problems.append(f'{e}\n{server.log()}')
    _remove(bases, bool(problems))
    if problems:
        pytest.fail('\n'.join(problems), pytrace=False)


@pytest.fixture
def loop_fs():
    """loop_fs(size_mib=8, image=None, options=(), fstype='ext4'): a
    loop-mounted ext4 (or XFS), fresh or from IMAGE (helpers.LoopFs);
    unmounted, with the inboxfs mounts over it first, at teardown."""
    made = []

    def factory(size_mib=8, image=None, options=(), fstype='ext4'):
        if os.geteuid() != 0 or not shutil.which(f'mkfs.{fstype}'):
            pytest.skip(f'a loop-mounted {fstype} needs root and mkfs.{fstype}')
        try:
            fs = helpers.LoopFs(size_mib, image, options, fstype=fstype)
        except helpers.Unavailable as e:
            pytest.skip(str(e))
        made.append(fs)
        return fs

    yield factory
    for fs in reversed(made):
        fs.cleanup()
