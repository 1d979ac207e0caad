"""The backing inbox as the consumer sees it: delivered files, staged and
quarantined drops, staging areas; and a client's create-new."""

import os


def errno_of(fn, *args, **kw):
    """0 if fn(*args) succeeds, else the errno it failed with."""
    try:
        fn(*args, **kw)
        return 0
    except OSError as e:
        return e.errno


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
