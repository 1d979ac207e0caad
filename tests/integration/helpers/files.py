"""The backing inbox as the consumer sees it: delivered files, staged and
quarantined drops, staging areas, the counters file; and a client's
create-new, whole-file reads and writes."""

import os

STATS = '.inboxfs-stats'   # the counters file at the top of a mount
# R9 / README: STEM~TAG.EXT, the tag 12 base-32 characters.
TAG = '[0-9A-Z]'


def errno_of(fn, *args, **kw):
    """0 if fn(*args) succeeds, else the errno it failed with."""
    try:
        fn(*args, **kw)
        return 0
    except OSError as e:
        return e.errno


def hold_drops(path, count):
    """Create-new up to COUNT drops PATH.N and keep them open: (fds, errno
    of the first create that failed, or 0)."""
    fds = []
    for i in range(count):
        try:
            fds.append(os.open(f'{path}.{i}', os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except OSError as e:
            return fds, e.errno
    return fds, 0


def create_excl(path, data):
    """A legacy client's create-new: O_CREAT|O_EXCL, all of DATA, close.
    Returns the writer's pid, as the daemon logs it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    return os.getpid()


def inbox_contents(inbox, sub=''):
    """{name: bytes} of the regular files of a backing inbox (or of its
    subdirectory SUB), staging excluded: what the consumer would pick up."""
    found = {}
    for entry in os.scandir(os.path.join(inbox, sub)):
        if entry.is_file(follow_symlinks=False) and entry.name != '.inboxfs':
            with open(entry.path, 'rb') as f:
                found[entry.name] = f.read()
    return found


def staging_areas(staging):
    """{area name: its lock file's inode} of the instances' staging areas
    in a staging directory (core/staging.h: HOST.PID.RANDOM/lock)."""
    found = {}
    for entry in os.scandir(staging):
        if entry.is_dir(follow_symlinks=False) and entry.name != 'incomplete':
            try:
                found[entry.name] = os.stat(os.path.join(entry.path, 'lock')).st_ino
            except FileNotFoundError:
                pass
    return found


def staging_area(staging, pid):
    """The path of the staging area of the instance of pid PID."""
    [area] = [a for a in staging_areas(staging) if a.split('.')[-2:-1] == [str(pid)]]
    return os.path.join(staging, area)


def staged(inbox, acked=False, staging=None):
    """The drops in the staging directory of INBOX (default INBOX/.inboxfs),
    as paths relative to it, in every instance's area and in the layout
    before areas: being written (d.*), and with ACKED those acknowledged but
    not yet published (a.*) too."""
    kinds = ('d.', 'a.') if acked else ('d.',)
    top = staging or os.path.join(inbox, '.inboxfs')
    found = []
    for entry in os.scandir(top):
        if entry.is_dir(follow_symlinks=False) and entry.name != 'incomplete':
            found += [os.path.join(entry.name, n) for n in os.listdir(entry.path)
                      if n[:2] in kinds]
        elif entry.name[:2] in kinds:
            found.append(entry.name)
    return sorted(found)


def incomplete(inbox):
    """{name: bytes} of the drops quarantined in INBOX/.inboxfs/incomplete."""
    top = os.path.join(inbox, '.inboxfs', 'incomplete')
    found = {}
    for name in sorted(os.listdir(top)):
        with open(os.path.join(top, name), 'rb') as f:
            found[name] = f.read()
    return found


def xattr_64k_supported(directory):
    """Does DIRECTORY's filesystem take a 64 KiB user.* value?"""
    probe = os.path.join(directory, '.xattr-probe')
    with open(probe, 'wb'):
        pass
    try:
        os.setxattr(probe, 'user.big', b'v' * 65536)
        return True
    except OSError:
        return False
    finally:
        os.unlink(probe)


def read_file(path):
    with open(path, 'rb') as f:
        return f.read()


def write_all(fd, data, chunk=65536):
    view = memoryview(data)
    while view:
        n = os.write(fd, view[:chunk])
        view = view[n:]


def assert_delivered_once(inbox, payloads, ext=None):
    """Every payload is in the backing INBOX (a path: a Mount's .inbox)
    exactly once, intact, and nothing else is; every name keeps the
    extension EXT. Returns {name: data}."""
    found = inbox_contents(inbox)
    counts = {}
    for data in found.values():
        counts[data] = counts.get(data, 0) + 1
    missing = [p for p in payloads if p not in counts]
    twice = {p: n for p, n in counts.items() if n > 1}
    extra = [n for n, d in found.items() if d not in set(payloads)]
    assert not missing, f'{len(missing)} of {len(payloads)} payloads not delivered ' \
                        f'(inbox has {len(found)} files)'
    assert not twice, f'payloads delivered more than once: {list(twice.values())[:5]}'
    assert not extra, f'unexpected files in the inbox: {extra[:10]}'
    assert len(found) == len(payloads)
    if ext is not None:
        bad = [n for n in found if not n.endswith(ext)]
        assert not bad, f'names that lost the extension {ext}: {bad[:10]}'
    return found


def try_create_excl(path, data):
    """create_excl(), its errno instead of an exception (0: created)."""
    try:
        create_excl(path, data)
        return 0
    except OSError as e:
        return e.errno


def read_stats(mnt):
    """{name: int} from MOUNTPOINT/.inboxfs-stats (as root: an observer)."""
    stats = {}
    with open(os.path.join(mnt, STATS), encoding='ascii') as f:
        for line in f:
            name, _, value = line.strip().partition(' ')
            if name:
                stats[name] = int(value)
    return stats


def write_file(path, data, mode=0o644):
    with open(path, 'wb') as f:
        f.write(data)
    os.chmod(path, mode)
