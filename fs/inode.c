/* The inode table (see inode.h): a hash of backing inode numbers to nodes
 * that hold file handles instead of descriptors. */
#include "inode.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

/* The last of the lock order (core/drop.c): never held while calling out. */
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static struct node **buckets;
static size_t nbuckets, count;
static int root_fd = -1;
static struct node root;
static union {
	struct file_handle fh;
	unsigned char buf[sizeof(struct file_handle) + MAX_HANDLE_SZ];
} root_handle;

int inode_init(int fd)
{
	struct stat st;
	int mount_id;

	if (fstat(fd, &st) < 0)
		return -errno;
	nbuckets = 4096;
	buckets = calloc(nbuckets, sizeof(*buckets));
	if (buckets == NULL)
		return -ENOMEM;
	root_fd = fd;
	root.ino = st.st_ino;
	root_handle.fh.handle_bytes = MAX_HANDLE_SZ;
	if (name_to_handle_at(fd, "", &root_handle.fh, &mount_id, AT_EMPTY_PATH) < 0)
		return -errno;
	root.type = S_IFDIR;
	root.nlookup = 2;
	return 0;
}

void inode_shutdown(void)
{
	for (size_t i = 0; i < nbuckets; i++) {
		while (buckets[i]) {
			struct node *n = buckets[i];

			buckets[i] = n->next;
			free(n->name);
			free(n);
		}
	}
	free(buckets);
	buckets = NULL;
}

int inbox_fd(void) { return root_fd; }

struct node *node_of(fuse_ino_t id)
{
	return id == FUSE_ROOT_ID ? &root : (struct node *)(uintptr_t)id;
}

fuse_ino_t node_id(const struct node *n)
{
	return n == &root ? FUSE_ROOT_ID : (fuse_ino_t)(uintptr_t)n;
}

static size_t bucket_of(uint64_t ino, size_t size)
{
	ino ^= ino >> 29;
	ino *= 0xbf58476d1ce4e5b9ULL;
	return (size_t)(ino ^ (ino >> 32)) & (size - 1);
}

/* Double the table when chains grow past two on average; with the lock. */
static void grow(void)
{
	size_t size = nbuckets * 2;
	struct node **nb = calloc(size, sizeof(*nb));

	if (nb == NULL)
		return;		/* longer chains, still correct */
	for (size_t i = 0; i < nbuckets; i++) {
		while (buckets[i]) {
			struct node *n = buckets[i];

			buckets[i] = n->next;
			n->next = nb[bucket_of(n->ino, size)];
			nb[bucket_of(n->ino, size)] = n;
		}
	}
	free(buckets);
	buckets = nb;
	nbuckets = size;
}

static bool same_handle(const struct node *n, const struct file_handle *fh)
{
	return n->handle_type == fh->handle_type && n->handle_bytes == fh->handle_bytes &&
	       memcmp(n->handle, fh->f_handle, fh->handle_bytes) == 0;
}

/* Unhook N from its chain: a newer file took its inode number. */
static void unhash(struct node *n)
{
	for (struct node **pp = &buckets[bucket_of(n->ino, nbuckets)]; *pp; pp = &(*pp)->next) {
		if (*pp == n) {
			*pp = n->next;
			count--;
			break;
		}
	}
	n->next = n;	/* marks "not in the table" for node_forget() */
}

int node_lookup_fd(int fd, struct stat *st, struct node **out)
{
	union {
		struct file_handle fh;
		unsigned char buf[sizeof(struct file_handle) + MAX_HANDLE_SZ];
	} h;
	struct node *n;
	int mount_id;

	if (fstat(fd, st) < 0)
		return -errno;
	if (st->st_ino == root.ino) {
		pthread_mutex_lock(&table_lock);
		root.nlookup++;
		pthread_mutex_unlock(&table_lock);
		*out = &root;
		return 0;
	}
	h.fh.handle_bytes = MAX_HANDLE_SZ;
	if (name_to_handle_at(fd, "", &h.fh, &mount_id, AT_EMPTY_PATH) < 0)
		return -errno;

	pthread_mutex_lock(&table_lock);
	for (n = buckets[bucket_of(st->st_ino, nbuckets)]; n; n = n->next) {
		if (n->ino != st->st_ino)
			continue;
		if (same_handle(n, &h.fh))
			goto found;
		unhash(n);	/* the old file is gone; its node lives on until forgotten */
		break;
	}
	n = calloc(1, sizeof(*n) + h.fh.handle_bytes);
	if (n == NULL) {
		pthread_mutex_unlock(&table_lock);
		return -ENOMEM;
	}
	n->ino = st->st_ino;
	n->type = st->st_mode & S_IFMT;
	n->handle_type = h.fh.handle_type;
	n->handle_bytes = h.fh.handle_bytes;
	memcpy(n->handle, h.fh.f_handle, h.fh.handle_bytes);
	if (++count > nbuckets * 2)
		grow();
	n->next = buckets[bucket_of(n->ino, nbuckets)];
	buckets[bucket_of(n->ino, nbuckets)] = n;
found:
	n->nlookup++;
	pthread_mutex_unlock(&table_lock);
	*out = n;
	return 0;
}

int node_lookup_at(int dirfd, const char *name, struct stat *st, struct node **out)
{
	int fd = openat(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	int ret;

	if (fd < 0)
		return -errno;
	ret = node_lookup_fd(fd, st, out);
	close(fd);
	return ret;
}

void node_forget(struct node *n, uint64_t nlookup)
{
	pthread_mutex_lock(&table_lock);
	if (n->nlookup < nlookup) {
		log_warnx("forget of %llu references, node holds %llu",
			  (unsigned long long)nlookup, (unsigned long long)n->nlookup);
		nlookup = n->nlookup;
	}
	n->nlookup -= nlookup;
	if (n->nlookup > 0 || n == &root) {
		pthread_mutex_unlock(&table_lock);
		return;
	}
	if (n->next != n)
		unhash(n);
	pthread_mutex_unlock(&table_lock);
	free(n->name);
	free(n);
}

int node_open(const struct node *n, int flags)
{
	union {
		struct file_handle fh;
		unsigned char buf[sizeof(struct file_handle) + MAX_HANDLE_SZ];
	} h;
	int fd;

	if (n == &root)
		fd = openat(root_fd, ".", flags | O_CLOEXEC);
	else {
		h.fh.handle_bytes = n->handle_bytes;
		h.fh.handle_type = n->handle_type;
		memcpy(h.fh.f_handle, n->handle, n->handle_bytes);
		fd = open_by_handle_at(root_fd, &h.fh, flags | O_NOFOLLOW | O_CLOEXEC);
	}
	return fd < 0 ? -errno : fd;
}

int node_handle(const struct node *n, int *type, unsigned *bytes, unsigned char *buf, size_t cap)
{
	const unsigned char *src = n == &root ? root_handle.fh.f_handle : n->handle;

	*type = n == &root ? root_handle.fh.handle_type : n->handle_type;
	*bytes = n == &root ? root_handle.fh.handle_bytes : n->handle_bytes;
	if (*bytes > cap)
		return -EOVERFLOW;
	memcpy(buf, src, *bytes);
	return 0;
}

int dir_get(const struct node *n)
{
	if (n == &root)
		return root_fd;
	if (n->type != S_IFDIR)
		return -ENOTDIR;
	/* Readable, not O_PATH: publication fsyncs it. */
	return node_open(n, O_RDONLY | O_DIRECTORY);
}

void dir_put(const struct node *n, int fd)
{
	if (fd >= 0 && n != &root)
		close(fd);
}

int node_stat(const struct node *n, struct stat *st)
{
	int fd, ret = 0;

	if (n == &root)
		return fstat(root_fd, st) < 0 ? -errno : 0;
	fd = node_open(n, O_PATH);
	if (fd < 0)
		return fd;
	if (fstat(fd, st) < 0)
		ret = -errno;
	close(fd);
	return ret;
}

void node_ref(struct node *n)
{
	pthread_mutex_lock(&table_lock);
	n->nlookup++;
	pthread_mutex_unlock(&table_lock);
}

void node_set_name(struct node *n, const struct node *parent, const char *name)
{
	char *copy;

	if (n == &root)
		return;
	pthread_mutex_lock(&table_lock);
	if (n->name && n->parent_ino == parent->ino && strcmp(n->name, name) == 0) {
		pthread_mutex_unlock(&table_lock);
		return;
	}
	pthread_mutex_unlock(&table_lock);
	copy = strdup(name);
	if (copy == NULL)
		return;
	pthread_mutex_lock(&table_lock);
	free(n->name);
	n->name = copy;
	n->parent_ino = parent->ino;
	pthread_mutex_unlock(&table_lock);
}

int node_open_parent(struct node *n, char *name, size_t size)
{
	union {
		struct file_handle fh;
		unsigned char buf[sizeof(struct file_handle) + MAX_HANDLE_SZ];
	} h;
	struct node *p = NULL;
	int fd;

	pthread_mutex_lock(&table_lock);
	if (n->name && strlen(n->name) < size) {
		strcpy(name, n->name);
		if (n->parent_ino == root.ino)
			p = &root;
		else
			for (p = buckets[bucket_of(n->parent_ino, nbuckets)]; p; p = p->next)
				if (p->ino == n->parent_ino && p->type == S_IFDIR)
					break;
	}
	if (p && p != &root) {
		h.fh.handle_bytes = p->handle_bytes;
		h.fh.handle_type = p->handle_type;
		memcpy(h.fh.f_handle, p->handle, p->handle_bytes);
	}
	pthread_mutex_unlock(&table_lock);
	if (p == NULL)
		return -ENOENT;
	if (p == &root)
		fd = openat(root_fd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
	else
		fd = open_by_handle_at(root_fd, &h.fh, O_PATH | O_DIRECTORY | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}
