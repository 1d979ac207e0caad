"""A loop-mounted ext4 image: small ones for a test to fill (ENOSPC),
images copied while mounted to play a power cut, and tools/bench's work
filesystem (a fresh ext4, so that numbers do not depend on the host
filesystem's history)."""

import os
import shutil
import subprocess

from .env import TIMEOUT, Unavailable, make_base_dir
from .procs import stop_process


def _run(cmd, timeout=TIMEOUT * 3):
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


class LoopFs:
    """A fresh ext4 (or FSTYPE: 'xfs') of SIZE_MIB (sparse; INODES inodes,
    ext4 only) or the existing IMAGE, loop-mounted with mount OPTIONS, in a
    new directory of PARENT (default: make_base_dir's); .inbox is a
    directory in it (mode 1777, made if absent). Unavailable if it cannot
    be made or mounted. The inboxfs mounts over it (register them with
    .uses(mount)) are unmounted first at cleanup(), which removes the image
    too."""

    def __init__(self, size_mib=None, image=None, options=(), inodes=4096, parent=None,
                 fstype='ext4'):
        self.base = make_base_dir('inboxfs-loopfs-', parent)
        self.image = image or os.path.join(self.base, 'fs.img')
        self.root = os.path.join(self.base, 'fs')
        self.mounts = []
        self.mounted = False
        os.mkdir(self.root)
        cmds = []
        if image is None:
            with open(self.image, 'wb') as f:
                f.truncate(size_mib << 20)
            cmds.append(['mkfs.xfs', '-q', '-f', self.image] if fstype == 'xfs' else
                        ['mkfs.ext4', '-q', '-F', '-m', '0', '-N', str(inodes), self.image])
        cmds.append(['mount', '-o', ','.join(('loop',) + tuple(options)), self.image,
                     self.root])
        for cmd in cmds:
            proc = _run(cmd, timeout=600)       # mkfs of a large image takes a while
            if proc.returncode != 0:
                self.cleanup()
                raise Unavailable(f'{" ".join(cmd[:2])} failed: {proc.stderr.strip()}')
        self.mounted = True
        self.inbox = os.path.join(self.root, 'inbox')
        if not os.path.isdir(self.inbox):
            os.mkdir(self.inbox)
            os.chmod(self.inbox, 0o1777)

    def uses(self, mount):
        self.mounts.append(mount)
        return mount

    def free(self):
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def device(self):
        """The loop device's name (loopN)."""
        proc = _run(['findmnt', '-n', '-o', 'SOURCE', self.root])
        return os.path.basename(proc.stdout.strip())

    def cleanup(self):
        try:
            for m in self.mounts:
                try:
                    m.unmount()
                except (AssertionError, OSError, TimeoutError):
                    pass                            # the mount fixture reports it
                for run in m.runs:
                    if run.proc.poll() is None:
                        stop_process(run.proc)
        finally:
            if self.mounted:
                if _run(['umount', self.root]).returncode != 0:
                    _run(['umount', '-l', self.root])
                self.mounted = False
            shutil.rmtree(self.base, ignore_errors=True)

    stop = cleanup
