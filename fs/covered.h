/* fs/covered.c: the directory under the mount, watched while serving. */
#ifndef INBOXFS_COVERED_H
#define INBOXFS_COVERED_H

/* Watch COVERED (a descriptor of the mountpoint opened before the mount;
 * -1: nothing to watch) and deliver into the inbox what reaches it while
 * serving. covered_stop() ends the watch; the caller closes COVERED. */
int covered_start(int covered);
void covered_stop(void);

#endif
