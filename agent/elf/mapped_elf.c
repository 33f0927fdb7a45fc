/* The agent's one ELF opener and its cache (see mapped_elf.h). Files are found in a chained
 * hash on (device, inode); size and mtime must match too, so a file rewritten in place (or an
 * inode number reused after a deletion) is opened afresh rather than served stale. Idle files
 * sit on an LRU list. Parsed objects are freed and idle files closed outside the lock, because
 * freeing a parsed object releases the images it holds (a debug file) and so re-enters here. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "elf/mapped_elf.h"
#include "util/hash.h"

#define BUCKETS		4096
#define SETTLED_SECONDS 2

struct mapped_elf {
	Elf *elf;
	uint64_t dev, inode;
	int64_t size;
	struct timespec mtime;
	unsigned refs;
	/* The file's last change (ctime) was well before it was mapped: a later change would
	 * show in size, mtime or ctime even with coarse timestamps. Only such a file is taken
	 * back from the idle list. */
	bool settled;
	void *parsed;
	void (*free_parsed)(void *);
	struct mapped_elf *next_in_bucket;
	struct mapped_elf *idle_prev, *idle_next; /* on the idle list when refs == 0 */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct mapped_elf *buckets[BUCKETS];
static struct mapped_elf *idle_head, *idle_tail; /* head: most recently released */
static struct mapped_elf_stats stats;

static size_t bucket_of(uint64_t dev, uint64_t inode)
{
	return hash_combine(hash_mix64(dev), inode) % BUCKETS;
}

static void idle_unlink(struct mapped_elf *m)
{
	if (m->idle_prev)
		m->idle_prev->idle_next = m->idle_next;
	else
		idle_head = m->idle_next;
	if (m->idle_next)
		m->idle_next->idle_prev = m->idle_prev;
	else
		idle_tail = m->idle_prev;
	m->idle_prev = m->idle_next = NULL;
	stats.idle--;
}

static void bucket_unlink(struct mapped_elf *m)
{
	struct mapped_elf **at = &buckets[bucket_of(m->dev, m->inode)];

	while (*at != m)
		at = &(*at)->next_in_bucket;
	*at = m->next_in_bucket;
}

static void destroy(struct mapped_elf *m)
{
	if (m->parsed && m->free_parsed)
		m->free_parsed(m->parsed);
	elf_end(m->elf);
	free(m);
}

static bool same_file(const struct mapped_elf *m, const struct stat *st)
{
	return m->dev == (uint64_t)st->st_dev && m->inode == (uint64_t)st->st_ino &&
	       m->size == (int64_t)st->st_size && m->mtime.tv_sec == st->st_mtim.tv_sec &&
	       m->mtime.tv_nsec == st->st_mtim.tv_nsec;
}

/* A held file matching st, with a new reference; NULL when none. An idle match that is not
 * settled (the file changed about when it was mapped: a rewrite within the same timestamp
 * tick would not show) is taken out of the cache into *stale for the caller to destroy.
 * Under the lock. */
static struct mapped_elf *find_and_hold(const struct stat *st, struct mapped_elf **stale)
{
	struct mapped_elf *m = buckets[bucket_of((uint64_t)st->st_dev, (uint64_t)st->st_ino)];

	for (; m; m = m->next_in_bucket) {
		if (!same_file(m, st))
			continue;
		if (m->refs == 0 && !m->settled) {
			if (!*stale) {
				idle_unlink(m);
				bucket_unlink(m);
				*stale = m;
			}
			continue;
		}
		if (m->refs == 0) {
			idle_unlink(m);
			stats.live++;
		}
		m->refs++;
		stats.opens++;
		stats.hits++;
		return m;
	}
	return NULL;
}

/* Maps the file behind fd (fd is the caller's to close). */
static int map_file(int fd, const struct stat *st, struct mapped_elf **out)
{
	struct mapped_elf *m = calloc(1, sizeof(*m));

	if (!m)
		return -ENOMEM;
	m->elf = elf_begin(fd, ELF_C_READ_MMAP, NULL);
	if (!m->elf || elf_kind(m->elf) != ELF_K_ELF) {
		if (m->elf)
			elf_end(m->elf);
		free(m);
		return -ENOEXEC;
	}
	/* Pull the whole file in (with READ_MMAP that is the mapping libelf already made) and
	 * let go of the descriptor: a daemon may hold thousands of files, and the mapping
	 * keeps a deleted or replaced file readable just as well. */
	if (elf_cntl(m->elf, ELF_C_FDREAD) != 0) {
		elf_end(m->elf);
		free(m);
		return -EIO;
	}
	m->dev = (uint64_t)st->st_dev;
	m->inode = (uint64_t)st->st_ino;
	m->size = (int64_t)st->st_size;
	m->mtime = st->st_mtim;
	m->refs = 1;
	m->settled = st->st_ctim.tv_sec + SETTLED_SECONDS < time(NULL);
	*out = m;
	return 0;
}

/* The file an O_PATH descriptor names, opened read-only when it is a regular file; any other
 * kind keeps its O_PATH descriptor (enough for fstat, which tells the caller what it is). A
 * path comes from a target's maps, a saved maps text (`allocscope count`) or a debug link: a
 * device named there must not be opened by root (opening a watchdog arms it, a tape rewinds on
 * close), and an O_PATH open reaches no driver. */
static int open_regular(int path_fd)
{
	char self[64];
	struct stat st;
	int fd;

	if (path_fd < 0 || fstat(path_fd, &st) != 0 || !S_ISREG(st.st_mode))
		return path_fd;
	snprintf(self, sizeof(self), "/proc/self/fd/%d", path_fd);
	fd = open(self, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	{
		int saved = errno;

		close(path_fd);
		errno = saved;
	}
	return fd;
}

/* Opens path read-only without blocking, and only if it is a regular file (open_regular). A
 * path inside another process's root ("/proc/PID/root/...", a container's files) is resolved
 * with that root as "/": an absolute symlink the container put there (or swapped in after its
 * map was read) must not lead the root agent to the host's files, devices included. openat2
 * (Linux 5.6); older kernels open it as a plain path. */
static int open_file(const char *path)
{
	const int flags = O_PATH | O_CLOEXEC;
	const char *p = path + strlen("/proc/");
	char root[64];
	int root_fd, fd;

	if (strncmp(path, "/proc/", strlen("/proc/")) != 0 || !isdigit((unsigned char)*p))
		return open_regular(open(path, flags));
	while (isdigit((unsigned char)*p))
		p++;
	if (strncmp(p, "/root/", strlen("/root/")) != 0 || (size_t)(p - path) > 32)
		return open_regular(open(path, flags));
	snprintf(root, sizeof(root), "%.*s/root", (int)(p - path), path);
	root_fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (root_fd < 0)
		return -1;
	{
		struct open_how how = {
			.flags = (uint64_t)flags,
			.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
		};

		fd = (int)syscall(SYS_openat2, root_fd, p + strlen("/root/"), &how, sizeof(how));
	}
	if (fd < 0 && errno == ENOSYS)
		fd = open(path, flags);
	{
		int saved = errno;

		close(root_fd);
		errno = saved;
	}
	return open_regular(fd);
}

int mapped_elf__open(const char *path, struct mapped_elf **out)
{
	struct mapped_elf *m, *raced, *stale = NULL;
	struct stat st;
	int fd, ret;

	*out = NULL;
	if (elf_version(EV_CURRENT) == EV_NONE)
		return -ENOTSUP;
	/* A FIFO or device where a file should be (a target writes the directories its
	 * binaries and debug links point into) is never opened for reading: see open_regular. */
	fd = open_file(path);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) != 0) {
		ret = -errno;
		close(fd);
		return ret;
	}
	/* libelf would call a directory or a device "not ELF"; say what it really is. */
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return S_ISDIR(st.st_mode) ? -EISDIR : -ENOEXEC;
	}
	pthread_mutex_lock(&lock);
	m = find_and_hold(&st, &stale);
	pthread_mutex_unlock(&lock);
	if (stale) {
		destroy(stale);
		stale = NULL;
	}
	if (m) {
		close(fd);
		*out = m;
		return 0;
	}
	ret = map_file(fd, &st, &m);
	close(fd);
	if (ret)
		return ret;
	pthread_mutex_lock(&lock);
	/* Another thread may have mapped the same file meanwhile: one copy wins. */
	raced = find_and_hold(&st, &stale);
	if (!raced) {
		size_t b = bucket_of(m->dev, m->inode);

		m->next_in_bucket = buckets[b];
		buckets[b] = m;
		stats.opens++;
		stats.live++;
	}
	pthread_mutex_unlock(&lock);
	if (stale)
		destroy(stale);
	if (raced) {
		destroy(m);
		m = raced;
	}
	*out = m;
	return 0;
}

void mapped_elf__put(struct mapped_elf *m)
{
	struct mapped_elf *evict = NULL;
	void (*free_parsed)(void *) = NULL;
	void *parsed = NULL;

	if (!m)
		return;
	pthread_mutex_lock(&lock);
	if (--m->refs == 0) {
		parsed = m->parsed;
		free_parsed = m->free_parsed;
		m->parsed = NULL;
		m->free_parsed = NULL;
		stats.live--;
		m->idle_prev = NULL;
		m->idle_next = idle_head;
		if (idle_head)
			idle_head->idle_prev = m;
		idle_head = m;
		if (!idle_tail)
			idle_tail = m;
		stats.idle++;
		while (stats.idle > MAPPED_ELF_IDLE_MAX) {
			struct mapped_elf *old = idle_tail;

			idle_unlink(old);
			bucket_unlink(old);
			old->next_in_bucket = evict;
			evict = old;
			stats.evicted++;
		}
	}
	pthread_mutex_unlock(&lock);
	if (parsed && free_parsed)
		free_parsed(parsed);
	while (evict) {
		struct mapped_elf *next = evict->next_in_bucket;

		destroy(evict);
		evict = next;
	}
}

Elf *mapped_elf__elf(const struct mapped_elf *m)
{
	return m->elf;
}

uint64_t mapped_elf__dev(const struct mapped_elf *m)
{
	return m->dev;
}

uint64_t mapped_elf__inode(const struct mapped_elf *m)
{
	return m->inode;
}

void *mapped_elf__parsed(const struct mapped_elf *m)
{
	return m->parsed;
}

void mapped_elf__set_parsed(struct mapped_elf *m, void *parsed, void (*free_parsed)(void *))
{
	if (m->parsed)
		return;
	m->parsed = parsed;
	m->free_parsed = free_parsed;
}

void mapped_elf__stats(struct mapped_elf_stats *out)
{
	pthread_mutex_lock(&lock);
	*out = stats;
	pthread_mutex_unlock(&lock);
}
