"""Several inboxfs instances over one inbox (R13, issue 12): each owns a
staging area locked while it runs; a start-up recovers only the areas of
instances that are gone, never a live one's. Two mounts of one inbox on
this machine (ext4 or tmpfs): the cluster-filesystem case is
test_gluster.py."""

import os

from helpers import create_excl, inbox_contents, incomplete, staged

OPEN = os.O_WRONLY | os.O_CREAT | os.O_EXCL


def test_second_instance_leaves_an_open_drop_of_the_first_alone(mount_inboxfs, client):
    """Issue 12's repro: instance 1 holds an open drop, instance 2 starts
    over the same inbox. Its recovery must not take the drop (on aee336c it
    moved it to incomplete/ and the writer's close failed with ENOENT):
    the drop is published by its own instance, the close succeeds, and both
    instances serve."""
    first = mount_inboxfs()
    s = client.session()
    fd = s.open(os.path.join(first.mnt, 'x.svf'), OPEN, 0o644)
    s.write(fd, b'A-part1')

    second = mount_inboxfs(first.inbox)
    s.write(fd, b' A-part2')
    s.close(fd)

    assert inbox_contents(first.inbox) == {'x.svf': b'A-part1 A-part2'}
    assert incomplete(first.inbox) == {}
    assert 'quarantined' not in second.log(), second.log()
    # Both serve, and a drop of the same name through the second is kept too.
    client.call(create_excl, os.path.join(second.mnt, 'x.svf'), b'B')
    client.call(create_excl, os.path.join(first.mnt, 'y.svf'), b'C')
    found = inbox_contents(first.inbox)
    assert sorted(found.values()) == [b'A-part1 A-part2', b'B', b'C'], found
    assert found['y.svf'] == b'C'
    assert staged(first.inbox, acked=True) == []
