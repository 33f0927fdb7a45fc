/* The push sinks' on-disk spool (see spool.h for what it promises). The file format, all
 * integers little-endian:
 *
 *    0  8  magic "ALSCSPL1"
 *    8  4  CRC-32 (zlib) of every byte from offset 12 to the end
 *   12  4  header length H: bytes from offset 0 to the first label (68 + service length)
 *   16  8  key              24  8  start_ns          32  8  duration_ns
 *   40 16  delivery ID      56  4  number of labels  60  4  pprof length
 *   64  4  service length   68  .  service bytes
 *    H  .  per label: u32 key length, key bytes, u32 value length, value bytes
 *    .  .  the gzipped pprof, to the end of the file
 *
 * A reader checks the magic, the CRC, that every length fits and that the lengths add up to
 * the file's size exactly, and that the key matches the file name; anything else is damage.
 * Strings carry no NUL and are stored without one. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <zlib.h>

#include "util/log.h"
#include "export/spool.h"
#include "util/fd_write.h"
#include "util/error_text.h"
#include "util/make_dirs.h"
#include "util/grow.h"

#define MAGIC	     "ALSCSPL1"
#define FIXED_HEADER 68
#define DIR_MODE     0750
#define DIRS_HINT	\
	"check that its parent is a directory allocscope may write to, or set sinks[].spool_dir"
#define FILE_MODE    0640
#define NAME_PREFIX  "profile-"
#define NAME_SUFFIX  ".spool"
#define TMP_PREFIX   ".tmp-"
#define LOCK_NAME    ".lock"
/* "profile-" + 20 digits + ".spool" */
#define NAME_LEN (8 + 20 + 6)

struct spool_entry {
	uint64_t key;
	uint64_t size;
};

struct spool {
	char *dir;
	uint64_t max_bytes;
	int lock_fd;		     /* -1 until locked */
	struct spool_entry *entries; /* sorted by key */
	size_t n, cap;
	uint64_t bytes;
	uint64_t pinned;
	unsigned tmp_seq;
	bool needs_scan; /* a file on disk is missing from the index (out of memory) */
	size_t recovered, torn; /* the last scan's leftovers of interrupted writes */
	char owner[SPOOL_OWNER_MAX]; /* who uses it, for other spools' messages */
	char holder[SPOOL_OWNER_MAX]; /* who held the lock at the last -EWOULDBLOCK, if ours */
	dev_t lock_dev;		      /* of the lock file, while locked */
	ino_t lock_ino;
	struct spool *next_locked;    /* in locked_spools */
};

/* The spools of this process that hold their lock: when a lock is refused, the message can
 * name the sink of this agent that holds it (two sinks given one directory in different
 * spellings) instead of blaming another process. flock(2) locks belong to open files, so a
 * second open of the same lock file in this process is refused like anyone else's. */
static pthread_mutex_t locked_spools_mutex = PTHREAD_MUTEX_INITIALIZER;
static struct spool *locked_spools;

/* ---- queued profiles --------------------------------------------------------------- */

static size_t str_len(const char *s)
{
	return s ? strlen(s) : 0;
}

/* Lays out one allocation: the struct, the label array, the strings, the pprof. */
static struct queued_profile *alloc_profile(size_t n_labels, size_t strings, size_t pprof_len)
{
	size_t size = sizeof(struct queued_profile) + n_labels * sizeof(struct profile_label) +
		      strings + pprof_len;
	struct queued_profile *p = malloc(size);

	if (!p)
		return NULL;
	memset(p, 0, sizeof(*p));
	p->labels = (struct profile_label *)(p + 1);
	p->n_labels = n_labels;
	p->pprof_gz = (uint8_t *)(p->labels + n_labels) + strings;
	p->pprof_gz_len = pprof_len;
	return p;
}

struct queued_profile *queued_profile__new(const struct profile_record *record, uint64_t key,
					   const uint8_t id[16])
{
	size_t strings = str_len(record->service) + 1;
	struct queued_profile *p;
	char *cursor;

	for (size_t i = 0; i < record->n_labels; i++)
		strings += str_len(record->labels[i].key) + str_len(record->labels[i].value) + 2;
	p = alloc_profile(record->n_labels, strings, record->pprof_gz_len);
	if (!p)
		return NULL;
	p->key = key;
	memcpy(p->id, id, sizeof(p->id));
	p->start_ns = record->start_ns;
	p->duration_ns = record->duration_ns;
	cursor = (char *)(p->labels + p->n_labels);
	p->service = cursor;
	cursor = stpcpy(cursor, record->service ? record->service : "") + 1;
	for (size_t i = 0; i < record->n_labels; i++) {
		p->labels[i].key = cursor;
		cursor = stpcpy(cursor, record->labels[i].key ? record->labels[i].key : "") + 1;
		p->labels[i].value = cursor;
		cursor = stpcpy(cursor, record->labels[i].value ? record->labels[i].value : "") + 1;
	}
	if (record->pprof_gz_len)
		memcpy(p->pprof_gz, record->pprof_gz, record->pprof_gz_len);
	return p;
}

/* ---- the file format --------------------------------------------------------------- */

static void put_u32(uint8_t **p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		*(*p)++ = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t **p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		*(*p)++ = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p)
{
	return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

/* zlib's crc32 takes 32-bit lengths. */
static uint32_t crc_of(const uint8_t *data, size_t len)
{
	uLong crc = crc32(0L, Z_NULL, 0);

	while (len) {
		uInt chunk = len > (1u << 30) ? (1u << 30) : (uInt)len;

		crc = crc32(crc, data, chunk);
		data += chunk;
		len -= chunk;
	}
	return (uint32_t)crc;
}

int spool__encode(const struct queued_profile *p, uint8_t **data, size_t *len)
{
	size_t service_len = str_len(p->service), total;
	uint8_t *buf, *w;

	*data = NULL;
	*len = 0;
	if (p->n_labels > SPOOL_MAX_LABELS || service_len > SPOOL_MAX_STRING ||
	    p->pprof_gz_len > SPOOL_MAX_PROFILE_BYTES)
		return -E2BIG;
	total = FIXED_HEADER + service_len + p->pprof_gz_len;
	for (size_t i = 0; i < p->n_labels; i++) {
		size_t k = str_len(p->labels[i].key), v = str_len(p->labels[i].value);

		if (k > SPOOL_MAX_STRING || v > SPOOL_MAX_STRING)
			return -E2BIG;
		total += 8 + k + v;
	}
	buf = malloc(total);
	if (!buf)
		return -ENOMEM;
	w = buf;
	memcpy(w, MAGIC, 8);
	w += 12; /* the CRC goes in last */
	put_u32(&w, (uint32_t)(FIXED_HEADER + service_len));
	put_u64(&w, p->key);
	put_u64(&w, (uint64_t)p->start_ns);
	put_u64(&w, (uint64_t)p->duration_ns);
	memcpy(w, p->id, 16);
	w += 16;
	put_u32(&w, (uint32_t)p->n_labels);
	put_u32(&w, (uint32_t)p->pprof_gz_len);
	put_u32(&w, (uint32_t)service_len);
	if (service_len)
		memcpy(w, p->service, service_len);
	w += service_len;
	for (size_t i = 0; i < p->n_labels; i++) {
		size_t k = str_len(p->labels[i].key), v = str_len(p->labels[i].value);

		put_u32(&w, (uint32_t)k);
		if (k)
			memcpy(w, p->labels[i].key, k);
		w += k;
		put_u32(&w, (uint32_t)v);
		if (v)
			memcpy(w, p->labels[i].value, v);
		w += v;
	}
	if (p->pprof_gz_len)
		memcpy(w, p->pprof_gz, p->pprof_gz_len);
	w = buf + 8;
	put_u32(&w, crc_of(buf + 12, total - 12));
	*data = buf;
	*len = total;
	return 0;
}

/* A length-prefixed string at *pos that must end by limit and hold no NUL. */
static int take_string(const uint8_t *data, size_t limit, size_t *pos, size_t *start, size_t *len)
{
	uint32_t n;

	if (limit - *pos < 4)
		return -EBADMSG;
	n = get_u32(data + *pos);
	*pos += 4;
	if (n > SPOOL_MAX_STRING || limit - *pos < n || memchr(data + *pos, 0, n))
		return -EBADMSG;
	*start = *pos;
	*len = n;
	*pos += n;
	return 0;
}

int spool__decode(const uint8_t *data, size_t len, struct queued_profile **out)
{
	uint32_t header_len, n_labels, pprof_len, service_len;
	size_t pos, labels_end, strings, start, n;
	struct queued_profile *p;
	char *cursor;

	*out = NULL;
	if (len < FIXED_HEADER || memcmp(data, MAGIC, 8) != 0)
		return -EBADMSG;
	if (get_u32(data + 8) != crc_of(data + 12, len - 12))
		return -EBADMSG;
	header_len = get_u32(data + 12);
	n_labels = get_u32(data + 56);
	pprof_len = get_u32(data + 60);
	service_len = get_u32(data + 64);
	if (n_labels > SPOOL_MAX_LABELS || pprof_len > SPOOL_MAX_PROFILE_BYTES ||
	    service_len > SPOOL_MAX_STRING || header_len != FIXED_HEADER + service_len ||
	    header_len > len || len - header_len < pprof_len ||
	    memchr(data + FIXED_HEADER, 0, service_len))
		return -EBADMSG;
	labels_end = len - pprof_len;

	/* First pass: check the labels and size the strings. */
	strings = service_len + 1;
	pos = header_len;
	for (uint32_t i = 0; i < n_labels; i++) {
		if (take_string(data, labels_end, &pos, &start, &n))
			return -EBADMSG;
		strings += n + 1;
		if (take_string(data, labels_end, &pos, &start, &n))
			return -EBADMSG;
		strings += n + 1;
	}
	if (pos != labels_end)
		return -EBADMSG;

	p = alloc_profile(n_labels, strings, pprof_len);
	if (!p)
		return -ENOMEM;
	p->key = get_u64(data + 16);
	p->start_ns = (int64_t)get_u64(data + 24);
	p->duration_ns = (int64_t)get_u64(data + 32);
	memcpy(p->id, data + 40, 16);
	cursor = (char *)(p->labels + n_labels);
	p->service = cursor;
	memcpy(cursor, data + FIXED_HEADER, service_len);
	cursor[service_len] = '\0';
	cursor += service_len + 1;
	pos = header_len;
	for (uint32_t i = 0; i < n_labels; i++) {
		take_string(data, labels_end, &pos, &start, &n);
		p->labels[i].key = cursor;
		memcpy(cursor, data + start, n);
		cursor[n] = '\0';
		cursor += n + 1;
		take_string(data, labels_end, &pos, &start, &n);
		p->labels[i].value = cursor;
		memcpy(cursor, data + start, n);
		cursor[n] = '\0';
		cursor += n + 1;
	}
	if (pprof_len)
		memcpy(p->pprof_gz, data + labels_end, pprof_len);
	*out = p;
	return 0;
}

/* ---- the directory ----------------------------------------------------------------- */

static void name_of(uint64_t key, char *buf, size_t len)
{
	snprintf(buf, len, NAME_PREFIX "%020llu" NAME_SUFFIX, (unsigned long long)key);
}

/* Exactly the names name_of writes. */
static bool parse_name(const char *name, uint64_t *key)
{
	uint64_t v = 0;

	if (strlen(name) != NAME_LEN || strncmp(name, NAME_PREFIX, 8) != 0 ||
	    strcmp(name + 28, NAME_SUFFIX) != 0)
		return false;
	for (int i = 8; i < 28; i++) {
		if (name[i] < '0' || name[i] > '9')
			return false;
		if (v > (UINT64_MAX - (uint64_t)(name[i] - '0')) / 10)
			return false;
		v = v * 10 + (uint64_t)(name[i] - '0');
	}
	*key = v;
	return true;
}

int spool__open(const char *dir, uint64_t max_bytes, struct spool **out, char *err, size_t err_len)
{
	char probe[PATH_MAX];
	struct spool *spool;
	struct stat st;
	int fd, ret;

	*out = NULL;
	if (!dir || dir[0] != '/') {
		set_err(err, err_len,
			"spool directory \"%s\" is not absolute (set "
			"sinks[].spool_dir to a path starting with /)",
			dir ? dir : "");
		return -EINVAL;
	}
	if (strlen(dir) + NAME_LEN + 32 >= PATH_MAX) {
		set_err(err, err_len, "spool directory %.64s... is too long", dir);
		return -ENAMETOOLONG;
	}
	ret = make_dirs(dir, DIR_MODE, "spool directory", DIRS_HINT, err, err_len);
	if (ret)
		return ret;
	if (stat(dir, &st) || !S_ISDIR(st.st_mode)) {
		set_err(err, err_len, "cannot use %s as a spool directory: %s", dir,
			errno ? strerror(errno) : "not a directory");
		return -ENOTDIR;
	}
	snprintf(probe, sizeof(probe), "%s/.probe-XXXXXX", dir);
	fd = mkostemp(probe, O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		set_err(err, err_len,
			"cannot write to spool directory %s: %s (check its owner and "
			"mode, or set sinks[].spool_dir)",
			dir, strerror(-ret));
		return ret;
	}
	close(fd);
	unlink(probe);

	spool = calloc(1, sizeof(*spool));
	if (!spool || !(spool->dir = strdup(dir))) {
		free(spool);
		set_err(err, err_len, "out of memory");
		return -ENOMEM;
	}
	spool->max_bytes = max_bytes;
	spool->lock_fd = -1;
	*out = spool;
	return 0;
}

void spool__free(struct spool *spool)
{
	if (!spool)
		return;
	if (spool->lock_fd >= 0) {
		pthread_mutex_lock(&locked_spools_mutex);
		for (struct spool **p = &locked_spools; *p; p = &(*p)->next_locked) {
			if (*p == spool) {
				*p = spool->next_locked;
				break;
			}
		}
		pthread_mutex_unlock(&locked_spools_mutex);
		close(spool->lock_fd); /* releases the flock */
	}
	free(spool->entries);
	free(spool->dir);
	free(spool);
}

const char *spool__dir(const struct spool *spool)
{
	return spool->dir;
}

void spool__set_owner(struct spool *spool, const char *owner)
{
	snprintf(spool->owner, sizeof(spool->owner), "%s", owner ? owner : "");
}

const char *spool__holder(const struct spool *spool)
{
	return spool->holder[0] ? spool->holder : NULL;
}

int spool__lock(struct spool *spool)
{
	char path[PATH_MAX];
	struct stat st;
	int fd;

	if (spool->lock_fd >= 0)
		return 0;
	snprintf(path, sizeof(path), "%s/" LOCK_NAME, spool->dir);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, FILE_MODE);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st))
		memset(&st, 0, sizeof(st));
	pthread_mutex_lock(&locked_spools_mutex);
	if (flock(fd, LOCK_EX | LOCK_NB)) {
		int ret = -errno;

		spool->holder[0] = '\0';
		for (const struct spool *s = locked_spools; s && st.st_ino; s = s->next_locked) {
			if (s->lock_dev == st.st_dev && s->lock_ino == st.st_ino) {
				snprintf(spool->holder, sizeof(spool->holder), "%s",
					 s->owner[0] ? s->owner : "another sink");
				break;
			}
		}
		pthread_mutex_unlock(&locked_spools_mutex);
		close(fd);
		return ret == -EAGAIN ? -EWOULDBLOCK : ret;
	}
	spool->lock_fd = fd;
	spool->lock_dev = st.st_dev;
	spool->lock_ino = st.st_ino;
	spool->holder[0] = '\0';
	spool->next_locked = locked_spools;
	locked_spools = spool;
	pthread_mutex_unlock(&locked_spools_mutex);
	return 0;
}

bool spool__locked(const struct spool *spool)
{
	return spool->lock_fd >= 0;
}

static size_t lower_bound(const struct spool *spool, uint64_t key)
{
	size_t lo = 0, hi = spool->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (spool->entries[mid].key < key)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static int index_insert(struct spool *spool, uint64_t key, uint64_t size)
{
	size_t at;

	if (array_grow((void **)&spool->entries, &spool->cap, spool->n, sizeof(*spool->entries),
		       64))
		return -ENOMEM;
	at = lower_bound(spool, key);
	if (at < spool->n && spool->entries[at].key == key) {
		spool->bytes -= spool->entries[at].size;
		spool->entries[at].size = size;
		spool->bytes += size;
		return 0;
	}
	memmove(&spool->entries[at + 1], &spool->entries[at],
		(spool->n - at) * sizeof(spool->entries[0]));
	spool->entries[at] = (struct spool_entry){.key = key, .size = size};
	spool->n++;
	spool->bytes += size;
	return 0;
}

static void index_remove_at(struct spool *spool, size_t at)
{
	spool->bytes -= spool->entries[at].size;
	memmove(&spool->entries[at], &spool->entries[at + 1],
		(spool->n - at - 1) * sizeof(spool->entries[0]));
	spool->n--;
}

static void index_remove(struct spool *spool, uint64_t key)
{
	size_t at = lower_bound(spool, key);

	if (at < spool->n && spool->entries[at].key == key)
		index_remove_at(spool, at);
}

static int compare_entries(const void *a, const void *b)
{
	const struct spool_entry *x = a, *y = b;

	return x->key < y->key ? -1 : x->key > y->key;
}

/* A temporary file a crash left behind: ".tmp-KEY-PID-SEQ". Its profile had already left
 * the killed agent's memory only if the write got as far as its sync, so a file that decodes
 * whole (the CRC proves it) is the profile and goes into the spool under its name; anything
 * else is a write cut short, whose profile died with the process. Returns true when
 * recovered (*key, *size set), false when removed. */
static bool recover_tmp(int dir_fd, const char *tmp_name, uint64_t *key, uint64_t *size)
{
	char name[NAME_LEN + 1];
	struct queued_profile *p = NULL;
	unsigned long long name_key;
	uint8_t *data = NULL;
	struct stat st;
	bool whole = false;
	ssize_t got;
	int fd;

	fd = openat(dir_fd, tmp_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd >= 0 && !fstat(fd, &st) && S_ISREG(st.st_mode) && st.st_size > 0 &&
	    (uint64_t)st.st_size <= SPOOL_MAX_PROFILE_BYTES + FIXED_HEADER +
					(SPOOL_MAX_LABELS * 2 + 1) * (SPOOL_MAX_STRING + 4) &&
	    sscanf(tmp_name, TMP_PREFIX "%20llu-", &name_key) == 1 &&
	    (data = malloc((size_t)st.st_size))) {
		got = pread(fd, data, (size_t)st.st_size, 0);
		whole = got == st.st_size && !spool__decode(data, (size_t)got, &p) &&
			p->key == name_key;
	}
	if (fd >= 0)
		close(fd);
	free(data);
	if (whole) {
		*key = p->key;
		*size = (uint64_t)st.st_size;
		name_of(p->key, name, sizeof(name));
		/* Never over a profile of that key: then the leftover is a copy. A hard link
		 * refuses an existing name as atomically where RENAME_NOREPLACE is missing. */
		whole = renameat2(dir_fd, tmp_name, dir_fd, name, RENAME_NOREPLACE) == 0;
		if (!whole && (errno == EINVAL || errno == ENOSYS))
			whole = linkat(dir_fd, tmp_name, dir_fd, name, 0) == 0;
	}
	free(p);
	/* Recovered: only the hard link's leftover name goes (already gone after a rename). */
	unlinkat(dir_fd, tmp_name, 0);
	return whole;
}

int spool__scan(struct spool *spool, uint64_t *max_key)
{
	struct dirent *ent;
	DIR *dir;
	int fd, ret = 0;

	*max_key = 0;
	if (spool->lock_fd < 0)
		return -ENOLCK;
	fd = open(spool->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	dir = fdopendir(fd);
	if (!dir) {
		ret = -errno;
		close(fd);
		return ret;
	}
	spool->n = 0;
	spool->bytes = 0;
	spool->recovered = spool->torn = 0;
	for (;;) {
		uint64_t key, size;
		struct stat st;

		errno = 0;
		ent = readdir(dir);
		if (!ent) {
			ret = -errno;
			break;
		}
		if (strncmp(ent->d_name, TMP_PREFIX, strlen(TMP_PREFIX)) == 0) {
			if (!recover_tmp(fd, ent->d_name, &key, &size)) {
				spool->torn++;
				continue;
			}
			spool->recovered++;
		} else {
			if (!parse_name(ent->d_name, &key))
				continue;
			if (fstatat(fd, ent->d_name, &st, AT_SYMLINK_NOFOLLOW) ||
			    !S_ISREG(st.st_mode))
				continue;
			size = (uint64_t)st.st_size;
		}
		if (array_grow((void **)&spool->entries, &spool->cap, spool->n,
			       sizeof(*spool->entries), 64)) {
			ret = -ENOMEM;
			break;
		}
		spool->entries[spool->n++] = (struct spool_entry){key, size};
		spool->bytes += size;
		if (key > *max_key)
			*max_key = key;
	}
	closedir(dir);
	if (spool->n)
		qsort(spool->entries, spool->n, sizeof(spool->entries[0]), compare_entries);
	spool->needs_scan = ret == -ENOMEM;
	return ret;
}

void spool__last_scan(const struct spool *spool, size_t *recovered, size_t *torn)
{
	*recovered = spool->recovered;
	*torn = spool->torn;
}

bool spool__needs_scan(const struct spool *spool)
{
	return spool->needs_scan;
}

size_t spool__count(const struct spool *spool)
{
	return spool->n;
}

uint64_t spool__bytes(const struct spool *spool)
{
	return spool->bytes;
}

bool spool__oldest(const struct spool *spool, uint64_t *key)
{
	if (!spool->n)
		return false;
	*key = spool->entries[0].key;
	return true;
}

void spool__pin(struct spool *spool, uint64_t key)
{
	spool->pinned = key;
}

static int remove_file(struct spool *spool, uint64_t key)
{
	char path[PATH_MAX], name[NAME_LEN + 1];

	name_of(key, name, sizeof(name));
	snprintf(path, sizeof(path), "%s/%s", spool->dir, name);
	if (unlink(path) && errno != ENOENT)
		return -errno;
	return 0;
}

int spool__remove(struct spool *spool, uint64_t key)
{
	index_remove(spool, key);
	return remove_file(spool, key);
}

/* Drops the oldest unpinned profiles until size more bytes fit. Returns false when even
 * then they do not fit, or the new profile (new_key) is older than everything droppable. */
static bool make_room(struct spool *spool, uint64_t new_key, uint64_t size, uint64_t *dropped)
{
	size_t at = 0;

	if (!spool->max_bytes)
		return true;
	if (size > spool->max_bytes)
		return false;
	while (spool->bytes + size > spool->max_bytes) {
		while (at < spool->n && spool->entries[at].key == spool->pinned)
			at++;
		if (at == spool->n || spool->entries[at].key > new_key)
			return false;
		remove_file(spool, spool->entries[at].key);
		index_remove_at(spool, at);
		(*dropped)++;
	}
	return true;
}

int spool__write(struct spool *spool, const struct queued_profile *p, uint64_t *dropped,
		 bool *self_dropped)
{
	char tmp[PATH_MAX], path[PATH_MAX], name[NAME_LEN + 1];
	uint8_t *data;
	size_t len;
	int fd, ret, dir_fd;

	*dropped = 0;
	*self_dropped = false;
	ret = spool__encode(p, &data, &len);
	if (ret)
		return ret;
	if (!make_room(spool, p->key, len, dropped)) {
		*self_dropped = true;
		free(data);
		return 0;
	}
	name_of(p->key, name, sizeof(name));
	snprintf(path, sizeof(path), "%s/%s", spool->dir, name);
	snprintf(tmp, sizeof(tmp), "%s/" TMP_PREFIX "%020llu-%ld-%u", spool->dir,
		 (unsigned long long)p->key, (long)getpid(), spool->tmp_seq++);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, FILE_MODE);
	if (fd < 0) {
		ret = -errno;
		free(data);
		return ret;
	}
	ret = fd_write_all(fd, data, len);
	free(data);
	if (!ret && fdatasync(fd))
		ret = -errno;
	if (close(fd) && !ret)
		ret = -errno;
	if (!ret && rename(tmp, path))
		ret = -errno;
	if (ret) {
		unlink(tmp);
		return ret;
	}
	/* The rename is durable once the directory is; the file is whole either way. */
	dir_fd = open(spool->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dir_fd >= 0) {
		fsync(dir_fd);
		close(dir_fd);
	}
	/* The file is whole and in place: the write is done. Should the index not take it
	 * (out of memory), the next scan (spool__needs_scan) finds it. */
	if (index_insert(spool, p->key, len))
		spool->needs_scan = true;
	return 0;
}

int spool__read(struct spool *spool, uint64_t key, struct queued_profile **out)
{
	char path[PATH_MAX], name[NAME_LEN + 1];
	struct stat st;
	uint8_t *data;
	ssize_t got;
	size_t len;
	int fd, ret;

	*out = NULL;
	name_of(key, name, sizeof(name));
	snprintf(path, sizeof(path), "%s/%s", spool->dir, name);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		ret = -errno;
		if (ret == -ENOENT)
			index_remove(spool, key);
		return ret;
	}
	if (fstat(fd, &st)) {
		ret = -errno;
		close(fd);
		return ret;
	}
	if (!S_ISREG(st.st_mode) ||
	    (uint64_t)st.st_size > SPOOL_MAX_PROFILE_BYTES + FIXED_HEADER +
				       (SPOOL_MAX_LABELS * 2 + 1) * (SPOOL_MAX_STRING + 4)) {
		close(fd);
		ret = -EBADMSG;
		goto damaged;
	}
	len = (size_t)st.st_size;
	data = malloc(len ? len : 1);
	if (!data) {
		close(fd);
		return -ENOMEM;
	}
	got = pread(fd, data, len, 0);
	close(fd);
	if (got < 0) {
		ret = -errno;
		free(data);
		return ret;
	}
	ret = spool__decode(data, (size_t)got, out);
	free(data);
	if (ret == -EBADMSG || (!ret && (*out)->key != key)) {
		free(*out);
		*out = NULL;
		ret = -EBADMSG;
		goto damaged;
	}
	return ret;

damaged:
	log_warn("spool file %s is damaged (cut short or corrupted): removing it", path);
	spool__remove(spool, key);
	return ret;
}
