/* How sync=close makes a drop durable before its close returns: one
 * journal commit where the filesystem is known to order it, two elsewhere.
 *
 * Two syncs (DURABLE_FSYNC), on any filesystem: fsync(drop), then the
 * publication's rename, then fsync(directory). On a journaled filesystem
 * that is two journal commits in a row per drop.
 *
 * One commit (DURABLE_ONE_COMMIT), on journaled ext4 with data=ordered
 * and on XFS only: sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER)
 * writes the drop's data and waits until its page writeback has ended,
 * then the rename, then fsync(directory). Read in Linux's fs/ext4 and
 * fs/jbd2 (6.x), this holds because:
 * - delayed allocation maps the blocks in ext4_writepages()'s journal
 *   handle (mpage_map_and_submit_extent()), which also raises i_disksize,
 *   before the pages are submitted: a transaction no later than the
 *   running one when sync_file_range() returns;
 * - with dioread_nolock (the default) the blocks are unwritten extents:
 *   ext4_end_bio() defers the bio to ext4_put_io_end_defer(), whose work
 *   converts them (ext4_end_io_end(), in a reserved handle of the running
 *   transaction) and only then, in ext4_release_io_end() ->
 *   ext4_finish_bio(), ends the pages' writeback; so sync_file_range()'s
 *   wait returns after the conversion is in a transaction, and after the
 *   device acknowledged the data;
 * - the rename is a later handle, in that transaction or a later one;
 * - ext4_sync_file() on a directory forces a full commit of the running
 *   transaction (ext4_fsync_journal(): "Fastcommit does not really
 *   support fsync on directories", ext4_force_commit()), jbd2 commits
 *   transactions in order, and the commit block goes with REQ_PREFLUSH |
 *   REQ_FUA (journal_submit_commit_record()): the device's cache, holding
 *   the data acknowledged before, is flushed before the commit counts.
 * On XFS (fs/xfs/xfs_aops.c, xfs_log_cil.c): the blocks are allocated
 * in a transaction at writeback; xfs_end_ioend() converts unwritten
 * extents and raises the on-disk size in transactions of their own and
 * only then calls iomap_finish_ioends(), which ends the writeback; the
 * directory's fsync (xfs_dir_fsync() -> xfs_log_force_inode()) forces
 * the log up to the rename's checkpoint, checkpoints reach the log in
 * order, and the push of a checkpoint flushes the data device's cache
 * once its contents are fixed, before its log writes
 * (xlog_cil_push_work()), while forced iclogs go with REQ_PREFLUSH |
 * REQ_FUA (XLOG_ICL_NEED_FLUSH, XLOG_ICL_NEED_FUA): after the rename, so
 * after the data.
 * So when the directory's fsync returns, the data, its allocation and
 * size, and the name are on stable storage, in one commit. A crash before
 * leaves the drop staged (d.*: set aside, its close never acknowledged;
 * a.*: delivered by recovery). The staging area's own sync after an a.*
 * or link() publication is that same commit too (one transaction per
 * rename; the unlink after a link() is done before the directory's sync
 * starts). Errors: sync_file_range() reports the file's writeback errors
 * as fsync() does; a failed conversion is as unreported there as under
 * fsync(), and a failed commit fails the directory's fsync.
 *
 * Not on: ext2, ext3 or ext4 without a journal (noload, or made with -O
 * ^has_journal: a directory's fsync there writes the directory alone),
 * ext4 with an external journal (its commit flushes the journal's device,
 * not the data's), ext4 data=journal, data=writeback or
 * journal_async_commit and XFS with an external log (not checked), and
 * every other filesystem (btrfs, tmpfs, NFS, GlusterFS, FUSE...): they
 * keep two syncs. tests/integration/test_powercut.py checks the
 * one-commit path (ext4 and XFS) through a power cut, and that the cut
 * sees a data sync left out. */
#ifndef INBOXFS_DURABLE_H
#define INBOXFS_DURABLE_H

#include <stdbool.h>
#include <stddef.h>

enum durable_path {
	DURABLE_FSYNC,		/* fsync the drop, then its directory */
	DURABLE_ONE_COMMIT,	/* write the drop out; the directory's fsync commits both */
};

/* The choice, from what is known of a filesystem: its statfs() magic,
 * the contents of /sys/fs/ext4/DEV/journal_task (NULL: unreadable),
 * whether its journal is inside it (/proc/fs/jbd2/DEV-INODE), and its
 * super options from /proc/self/mountinfo (NULL: not found). *WHY gets a
 * phrase for the log. Pure. */
enum durable_path durable_choose(unsigned long magic, const char *journal_task,
				 bool journal_inside, const char *super_options, const char **why);

/* durable_choose() for the filesystem of FD, read from the kernel. */
enum durable_path durable_probe(int fd, const char **why);

/* "one journal commit" or "fsync of the drop, then of its directory". */
const char *durable_path_name(enum durable_path p);

#endif
