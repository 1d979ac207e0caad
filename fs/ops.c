/* The operations table, and the session's start (INIT). The handlers are
 * in nodes.c (names and attributes), files.c (open files), dirs.c
 * (directories, statfs, extended attributes). */
#include "dirs.h"
#include "files.h"
#include "fs.h"
#include "log.h"
#include "nodes.h"
#include "ops.h"

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	/* Truncating opens must reach open() with O_TRUNC, or R3 could not
	 * keep their data off an existing file. */
	if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
		conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
	else
		log_warnx("kernel lacks atomic O_TRUNC: truncating opens arrive as truncate");
	/* Every write must reach the daemon before close() returns (R4, R5). */
	conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
	/* No splicing, of requests or of READ replies: a 1 MiB message needs
	 * a pipe larger than pipe-max-size (growing one past it takes
	 * CAP_SYS_RESOURCE), small requests would cost a splice and a read
	 * instead of one read, and where the pipes could grow it was measured
	 * to gain nothing. Without it no worker thread holds a pipe. */
	conn->want &= ~FUSE_CAP_SPLICE_READ;
	/* Large sequential reads: the kernel reads ahead as far as we let it. */
	conn->max_readahead = READAHEAD_BYTES;
}

const struct fuse_lowlevel_ops inboxfs_ops = {
	.init		= op_init,
	.lookup		= op_lookup,
	.forget		= op_forget,
	.forget_multi	= op_forget_multi,
	.getattr	= op_getattr,
	.setattr	= op_setattr,
	.readlink	= op_readlink,
	.mknod		= op_mknod,
	.mkdir		= op_mkdir,
	.symlink	= op_symlink,
	.link		= op_link,
	.unlink		= op_unlink,
	.rmdir		= op_rmdir,
	.rename		= op_rename,
	.open		= op_open,
	.create		= op_create,
	.read		= op_read,
	.write_buf	= op_write_buf,
	.flush		= op_flush,
	.release	= op_release,
	.fsync		= op_fsync,
	.fallocate	= op_fallocate,
	.lseek		= op_lseek,
	.opendir	= op_opendir,
	.readdir	= op_readdir,
	.readdirplus	= op_readdirplus,
	.releasedir	= op_releasedir,
	.fsyncdir	= op_fsyncdir,
	.statfs		= op_statfs,
	.getxattr	= op_getxattr,
	.listxattr	= op_listxattr,
	.setxattr	= op_setxattr,
	.removexattr	= op_removexattr,
};
