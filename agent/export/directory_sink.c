/* The directory sink writes each profile to PATH/SERVICE/alloc-YYYYMMDDTHHMMSSZ.pb.gz and keeps
 * the directory within its retention limits. A reader (a person, pprof, a collector that ships
 * the files on) must never see a half-written profile, so each file is written under a hidden
 * temporary name, synced, and renamed into place without replacing an existing profile.
 *
 * Retention only ever touches files this sink could have written: regular files named like a
 * profile, one level below PATH. Everything else in the tree is left alone, so pointing the
 * sink at a directory that also holds other things cannot destroy them.
 *
 * The sink is not thread-safe: the agent submits from one thread. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>

#include "util/log.h"
#include "export/directory_sink.h"
#include "export/sink.h"
#include "util/fd_write.h"
#include "util/error_text.h"
#include "util/clock.h"
#include "util/make_dirs.h"
#include "util/grow.h"

#define DIR_MODE  0750
#define DIRS_HINT	\
	"check that its parent is a directory allocscope may write to, or set sinks[].path"
#define FILE_MODE 0640

/* Longest service directory name; longer service names are cut. */
#define SERVICE_DIR_MAX 128

/* "alloc-" + "YYYYMMDDTHHMMSSZ" + "-NNNNNNNNN" + ".pb.gz" fits with room to spare. */
#define PROFILE_NAME_MAX 48

/* How many "-N" names to try when profiles of one service share a second. Reaching it means
 * something is badly wrong (a clock stuck in the past), not a busy service. */
#define MAX_COLLISIONS 10000

/* "YYYYMMDDTHHMMSSZ" and its NUL, with room for the compiler's worst case. */
#define STAMP_MAX 24

/* Room for PATH/SERVICE/NAME in messages. */
#define MSG_PATH_MAX (PATH_MAX + SERVICE_DIR_MAX + PROFILE_NAME_MAX + 2)

/* A failure to write (a full disk, a directory gone read-only) repeats for every service at
 * every interval while its cause lasts: after one is logged, the next waits this long. */
#define FAILURE_LOG_INTERVAL_MS 30000

struct directory_sink {
	struct sink base;
	char *path;               /* absolute, without trailing slashes (except "/") */
	uint64_t max_total_bytes; /* 0: no limit */
	uint64_t max_age_ms;      /* 0: no limit */
	struct sink_stats stats;
	unsigned int tmp_seq;     /* makes temporary names unique within this process */
	bool warned_small_limit;  /* the "limit below one profile" warning is said once */
	int64_t next_failure_log_ms; /* failures are logged again from then (monotonic) */
	uint64_t failures_unsaid;    /* failures since the last one logged, not logged */
};

/* A profile file found by the retention scan. */
struct profile_file {
	int64_t stamp;   /* seconds since the epoch, from the name */
	uint32_t seq;    /* the "-N" suffix; 0 for the first file of a second */
	uint32_t dir;    /* index into the scan's service directories */
	uint64_t size;
	bool newest;     /* the file this submit wrote: never removed */
	bool remove;
	char name[PROFILE_NAME_MAX];
};

struct service_dir {
	char *name;
	size_t first; /* the directory's files are files[first .. first + count) */
	size_t count;
};

struct retention_scan {
	struct profile_file *files;
	size_t n_files, cap_files;
	struct service_dir *dirs;
	size_t n_dirs, cap_dirs;
};

/* The service name as one safe path component: it can neither climb out of PATH ("..", "/")
 * nor hide (a leading '.'), and it reads the same in every locale. */
static void service_dir_name(const char *service, char *out)
{
	size_t len = 0;

	if (service) {
		for (; service[len] && len < SERVICE_DIR_MAX; len++) {
			unsigned char c = (unsigned char)service[len];
			bool keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
				    (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';

			out[len] = keep ? (char)c : '_';
		}
	}
	out[len] = '\0';
	if (len == 0)
		strcpy(out, "unknown");
	else if (out[0] == '.')
		out[0] = '_';
}

/* The UTC stamp in profile names. Returns 0, or -EINVAL for a time outside years 1000..9999,
 * which no wall clock gives and whose names would not sort. */
static int format_stamp(int64_t start_ns, char *out, size_t out_len)
{
	int64_t secs = start_ns / 1000000000;
	time_t t;
	struct tm tm;

	/* Round towards the past for times before the epoch, as the wall clock would. */
	if (start_ns < 0 && start_ns % 1000000000)
		secs--;
	t = (time_t)secs;
	if (!gmtime_r(&t, &tm))
		return -EINVAL;
	if (tm.tm_year + 1900 < 1000 || tm.tm_year + 1900 > 9999)
		return -EINVAL;
	if (strftime(out, out_len, "%Y%m%dT%H%M%SZ", &tm) != 16)
		return -EINVAL;
	return 0;
}

static bool parse_digits(const char *s, int n, int *out)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return true;
}

/* Recognises exactly the names this sink writes: alloc-YYYYMMDDTHHMMSSZ.pb.gz and
 * alloc-YYYYMMDDTHHMMSSZ-N.pb.gz. Anything else is not ours, whatever it looks like. */
static bool parse_profile_name(const char *name, int64_t *stamp, uint32_t *seq)
{
	struct tm tm = { 0 };
	int year, mon, day, hour, min, sec;
	const char *p = name;
	uint64_t n = 0;
	time_t t;

	if (strncmp(p, "alloc-", 6) != 0)
		return false;
	p += 6;
	if (!parse_digits(p, 4, &year) || !parse_digits(p + 4, 2, &mon) ||
	    !parse_digits(p + 6, 2, &day) || p[8] != 'T' || !parse_digits(p + 9, 2, &hour) ||
	    !parse_digits(p + 11, 2, &min) || !parse_digits(p + 13, 2, &sec) || p[15] != 'Z')
		return false;
	p += 16;
	if (*p == '-') {
		int digits = 0;

		p++;
		if (*p == '0')
			return false; /* never written: counting starts at 1 */
		for (; *p >= '0' && *p <= '9' && digits < 9; p++, digits++)
			n = n * 10 + (uint64_t)(*p - '0');
		if (digits == 0)
			return false;
	}
	if (strcmp(p, ".pb.gz") != 0)
		return false;
	if (mon < 1 || mon > 12 || day < 1 || day > 31 || hour > 23 || min > 59 || sec > 60)
		return false;
	tm.tm_year = year - 1900;
	tm.tm_mon = mon - 1;
	tm.tm_mday = day;
	tm.tm_hour = hour;
	tm.tm_min = min;
	tm.tm_sec = sec;
	t = timegm(&tm);
	if (t == (time_t)-1 && year != 1969)
		return false;
	*stamp = (int64_t)t;
	*seq = (uint32_t)n;
	return true;
}

/* mkdir -p. Returns 0 or -errno with err describing the directory that could not be made. */
/* Root passes access() whatever the mode, and a read-only mount or a security module can still
 * refuse, so the only trustworthy test is creating a file. */
static int probe_writable(const char *path, char *err, size_t err_len)
{
	char probe[PATH_MAX];
	int fd;

	if (snprintf(probe, sizeof(probe), "%s/.allocscope-probe-XXXXXX", path) >=
	    (int)sizeof(probe))
		return -ENAMETOOLONG;
	fd = mkostemp(probe, O_CLOEXEC);
	if (fd < 0) {
		int saved = errno;

		set_err(err, err_len,
			"cannot write profiles to %s: %s (check the directory's owner and mode, "
			"or set sinks[].path)",
			path, strerror(saved));
		return -saved;
	}
	close(fd);
	unlink(probe);
	return 0;
}

static const char *full_path(const struct directory_sink *ds, const char *service,
			     const char *name, char *buf, size_t len)
{
	if (name)
		snprintf(buf, len, "%s/%s/%s", ds->path, service, name);
	else
		snprintf(buf, len, "%s/%s", ds->path, service);
	return buf;
}

/* Logs a failure of the submit path, at most one per FAILURE_LOG_INTERVAL_MS; the next one
 * logged says how many were left unsaid in between (stats.errors counts every one). */
__attribute__((format(printf, 2, 3))) static void log_failure(struct directory_sink *ds,
							    const char *fmt, ...)
{
	char message[MSG_PATH_MAX + 256];
	int64_t now = monotonic_ms();
	va_list ap;

	if (now < ds->next_failure_log_ms) {
		ds->failures_unsaid++;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);
	if (ds->failures_unsaid)
		log_error("%s (%llu more failures of this sink not logged in the last %d s)",
			  message, (unsigned long long)ds->failures_unsaid,
			  FAILURE_LOG_INTERVAL_MS / 1000);
	else
		log_error("%s", message);
	ds->failures_unsaid = 0;
	ds->next_failure_log_ms = now + FAILURE_LOG_INTERVAL_MS;
}

/* The hint that makes a full disk actionable. */
static const char *space_hint(int errnum)
{
	if (errnum == ENOSPC)
		return " (the disk is full; set sinks[].max_total_size to bound how much space "
		       "profiles use)";
	if (errnum == EDQUOT)
		return " (the disk quota is used up; set sinks[].max_total_size to bound how "
		       "much space profiles use)";
	return "";
}

/* Opens PATH. If someone removed it while the agent runs, it is made again rather than losing
 * every later profile. */
static int open_root(struct directory_sink *ds)
{
	char err[PATH_MAX + 160];
	int fd, ret;

	fd = open(ds->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0)
		return fd;
	if (errno != ENOENT) {
		ret = -errno;
		log_failure(ds,
			    "cannot open profile directory %s: %s (check that it is a directory "
			    "allocscope may write to)",
			    ds->path, strerror(-ret));
		return ret;
	}
	log_warn("profile directory %s disappeared; creating it again", ds->path);
	ret = make_dirs(ds->path, DIR_MODE, "directory", DIRS_HINT, err, sizeof(err));
	if (ret) {
		log_failure(ds, "%s", err);
		return ret;
	}
	fd = open(ds->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		log_failure(ds, "cannot open profile directory %s: %s", ds->path, strerror(-ret));
		return ret;
	}
	return fd;
}

/* Opens (creating on demand) PATH/SERVICE. *created tells whether PATH changed. */
static int open_service_dir(struct directory_sink *ds, int root_fd, const char *service,
			    bool *created)
{
	char msg_path[MSG_PATH_MAX];
	int fd, ret;

	*created = false;
	if (mkdirat(root_fd, service, DIR_MODE) == 0) {
		*created = true;
	} else if (errno != EEXIST) {
		ret = -errno;
		log_failure(ds, "cannot create directory %s: %s%s",
			    full_path(ds, service, NULL, msg_path, sizeof(msg_path)),
			    strerror(-ret), space_hint(-ret));
		return ret;
	}
	/* No symlinks: retention would not follow one, so files written through it would
	 * never be removed. */
	fd = openat(root_fd, service, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		full_path(ds, service, NULL, msg_path, sizeof(msg_path));
		if (ret == -ENOTDIR || ret == -ELOOP)
			log_failure(ds,
				    "cannot write profiles to %s: it exists and is not a directory "
				    "(move it away)",
				    msg_path);
		else
			log_failure(ds, "cannot open directory %s: %s", msg_path, strerror(-ret));
		return ret;
	}
	return fd;
}

/* Moves from to to inside dir_fd unless to exists (-EEXIST). */
static int rename_noreplace(int dir_fd, const char *from, const char *to)
{
	struct stat st;

	if (renameat2(dir_fd, from, dir_fd, to, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return -errno;
	/* Some network and FUSE filesystems lack RENAME_NOREPLACE; a hard link refuses an
	 * existing name just as atomically. */
	if (linkat(dir_fd, from, dir_fd, to, 0) == 0) {
		unlinkat(dir_fd, from, 0);
		return 0;
	}
	if (errno == EEXIST)
		return -EEXIST;
	if (errno != EPERM && errno != EOPNOTSUPP && errno != ENOSYS)
		return -errno;
	/* Without hard links either: only this sink writes here, so check-then-rename races
	 * with nobody. */
	if (fstatat(dir_fd, to, &st, AT_SYMLINK_NOFOLLOW) == 0)
		return -EEXIST;
	if (errno != ENOENT)
		return -errno;
	if (renameat(dir_fd, from, dir_fd, to))
		return -errno;
	return 0;
}

/* The "-N" to start from for a new profile with this stamp: one past the highest in use.
 * Probing upwards from the bare name is not enough: retention removes a second's oldest files
 * first, so low numbers can be free while higher ones remain, and reusing one would make the
 * newest profile look older than the ones beside it. A failed scan only costs that order;
 * the no-replace rename still protects every existing file. */
static uint32_t first_free_seq(int svc_fd, const char *stamp)
{
	char prefix[STAMP_MAX + 8];
	uint32_t next = 0;
	struct dirent *ent;
	size_t prefix_len;
	DIR *dir;
	int fd;

	fd = openat(svc_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	dir = fdopendir(fd);
	if (!dir) {
		close(fd);
		return 0;
	}
	prefix_len = (size_t)snprintf(prefix, sizeof(prefix), "alloc-%s", stamp);
	for (;;) {
		int64_t file_stamp;
		uint32_t seq;

		ent = readdir(dir);
		if (!ent)
			break;
		if (strncmp(ent->d_name, prefix, prefix_len) != 0)
			continue;
		if (!parse_profile_name(ent->d_name, &file_stamp, &seq))
			continue;
		if (seq >= next)
			next = seq + 1;
	}
	closedir(dir);
	return next;
}

/* Writes the record's bytes under a new profile name in svc_fd; fills name. */
static int write_profile_file(struct directory_sink *ds, int svc_fd, const char *service,
			      const char *stamp, const struct profile_record *record, char *name,
			      size_t name_len)
{
	char tmp[64], msg_path[MSG_PATH_MAX];
	const char *step;
	int fd = -1, ret = 0;
	uint32_t first;

	for (int attempt = 0; attempt < 100; attempt++) {
		snprintf(tmp, sizeof(tmp), ".alloc-%ld-%u.tmp", (long)getpid(), ds->tmp_seq++);
		fd = openat(svc_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, FILE_MODE);
		if (fd >= 0 || errno != EEXIST)
			break;
	}
	if (fd < 0) {
		ret = -errno;
		log_failure(ds, "cannot create a file in %s: %s%s",
			    full_path(ds, service, NULL, msg_path, sizeof(msg_path)),
			    strerror(-ret), space_hint(-ret));
		return ret;
	}

	step = "write";
	ret = fd_write_all(fd, record->pprof_gz, record->pprof_gz_len);
	if (!ret && fsync(fd)) {
		step = "sync";
		ret = -errno;
	}
	/* close() is where some network filesystems report a failed write. */
	if (close(fd) && !ret) {
		step = "write";
		ret = -errno;
	}
	if (ret) {
		log_failure(ds, "cannot %s profile %s/%s/alloc-%s.pb.gz: %s%s", step, ds->path,
			    service, stamp, strerror(-ret), space_hint(-ret));
		goto remove_tmp;
	}

	/* Two intervals within one second, or a restart, reuse a stamp: the earlier profile
	 * keeps its name and this one gets the next "-N". */
	first = first_free_seq(svc_fd, stamp);
	ret = -EEXIST;
	for (uint32_t n = first; n <= first + MAX_COLLISIONS && ret == -EEXIST; n++) {
		if (n == 0)
			snprintf(name, name_len, "alloc-%s.pb.gz", stamp);
		else
			snprintf(name, name_len, "alloc-%s-%u.pb.gz", stamp, n);
		ret = rename_noreplace(svc_fd, tmp, name);
	}
	if (ret) {
		full_path(ds, service, name, msg_path, sizeof(msg_path));
		if (ret == -EEXIST)
			log_failure(ds,
				    "cannot name profile %s: %d profiles already share its second "
				    "(is the clock stuck?)",
				    msg_path, MAX_COLLISIONS + 1);
		else
			log_failure(ds, "cannot rename %s/%s/%s to %s: %s%s", ds->path, service,
				    tmp, msg_path, strerror(-ret), space_hint(-ret));
		goto remove_tmp;
	}

	/* The rename is durable only once the directory is. The profile is complete either
	 * way, so a failure here is worth a warning, not a lost profile. */
	if (fsync(svc_fd))
		log_warn("cannot sync directory %s: %s",
			 full_path(ds, service, NULL, msg_path, sizeof(msg_path)),
			 strerror(errno));
	return 0;

remove_tmp:
	unlinkat(svc_fd, tmp, 0);
	return ret;
}

static int scan_add_dir(struct retention_scan *scan, const char *name)
{
	struct service_dir *dir;

	if (array_grow((void **)&scan->dirs, &scan->cap_dirs, scan->n_dirs, sizeof(*scan->dirs),
		       16))
		return -ENOMEM;
	dir = &scan->dirs[scan->n_dirs];
	dir->name = strdup(name);
	if (!dir->name)
		return -ENOMEM;
	dir->first = scan->n_files;
	dir->count = 0;
	scan->n_dirs++;
	return 0;
}

static struct profile_file *scan_add_file(struct retention_scan *scan)
{
	if (array_grow((void **)&scan->files, &scan->cap_files, scan->n_files, sizeof(*scan->files),
		       256))
		return NULL;
	scan->dirs[scan->n_dirs - 1].count++;
	return &scan->files[scan->n_files++];
}

static void scan_free(struct retention_scan *scan)
{
	for (size_t i = 0; i < scan->n_dirs; i++)
		free(scan->dirs[i].name);
	free(scan->dirs);
	free(scan->files);
}

/* Collects the profile files of one service directory. */
static int scan_service_dir(struct retention_scan *scan, int root_fd, const char *dir_name,
			    bool need_size, const char *new_service, const char *new_name)
{
	struct dirent *ent;
	DIR *dir;
	int fd, ret;

	fd = openat(root_fd, dir_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT || errno == ENOTDIR || errno == ELOOP ? 0 : -errno;
	dir = fdopendir(fd);
	if (!dir) {
		ret = -errno;
		close(fd);
		return ret;
	}
	ret = scan_add_dir(scan, dir_name);
	if (ret)
		goto out;
	for (;;) {
		struct profile_file *file;
		int64_t stamp;
		uint32_t seq;
		uint64_t size = 0;

		errno = 0;
		ent = readdir(dir);
		if (!ent) {
			ret = -errno;
			break;
		}
		if (ent->d_type != DT_REG && ent->d_type != DT_UNKNOWN)
			continue;
		if (!parse_profile_name(ent->d_name, &stamp, &seq))
			continue;
		/* d_type already says "regular file" on common filesystems; stat only for
		 * what it cannot tell. */
		if (need_size || ent->d_type == DT_UNKNOWN) {
			struct stat st;

			if (fstatat(fd, ent->d_name, &st, AT_SYMLINK_NOFOLLOW))
				continue; /* gone meanwhile */
			if (!S_ISREG(st.st_mode))
				continue;
			size = (uint64_t)st.st_size;
		}
		file = scan_add_file(scan);
		if (!file) {
			ret = -ENOMEM;
			break;
		}
		file->stamp = stamp;
		file->seq = seq;
		file->dir = (uint32_t)(scan->n_dirs - 1);
		file->size = size;
		file->remove = false;
		file->newest = strcmp(dir_name, new_service) == 0 && strcmp(ent->d_name, new_name) == 0;
		/* parse_profile_name admits at most 38 bytes. */
		memcpy(file->name, ent->d_name, strlen(ent->d_name) + 1);
	}
out:
	closedir(dir);
	return ret;
}

static int scan_profiles(struct retention_scan *scan, int root_fd, bool need_size,
			 const char *new_service, const char *new_name)
{
	struct dirent *ent;
	DIR *dir;
	int fd, ret = 0;

	/* readdir needs its own descriptor: fdopendir takes ownership. */
	fd = openat(root_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	dir = fdopendir(fd);
	if (!dir) {
		ret = -errno;
		close(fd);
		return ret;
	}
	for (;;) {
		errno = 0;
		ent = readdir(dir);
		if (!ent) {
			ret = -errno;
			break;
		}
		/* Service directories never start with '.', so hidden entries (and "." and
		 * "..") are someone else's. */
		if (ent->d_name[0] == '.')
			continue;
		if (ent->d_type != DT_DIR && ent->d_type != DT_UNKNOWN)
			continue;
		ret = scan_service_dir(scan, root_fd, ent->d_name, need_size, new_service,
				       new_name);
		if (ret)
			break;
	}
	closedir(dir);
	return ret;
}

static int compare_age(const void *a, const void *b, void *arg)
{
	const struct retention_scan *scan = arg;
	const struct profile_file *fa = &scan->files[*(const size_t *)a];
	const struct profile_file *fb = &scan->files[*(const size_t *)b];
	int cmp;

	if (fa->stamp != fb->stamp)
		return fa->stamp < fb->stamp ? -1 : 1;
	/* Within a second, "-N" counts up in the order the files were written. */
	if (fa->seq != fb->seq)
		return fa->seq < fb->seq ? -1 : 1;
	cmp = strcmp(scan->dirs[fa->dir].name, scan->dirs[fb->dir].name);
	if (cmp)
		return cmp;
	return strcmp(fa->name, fb->name);
}

/* Decides which files go. The age rule measures against the wall clock only, using the stamp
 * in each name (not mtime, which copies and restores change): a file is too old when its
 * stamp is more than max_age_ms before now. The file just written is exempt from both rules:
 * removing the profile the sink was asked to keep helps nobody, and it goes on a later
 * submit once newer ones exist. */
static int mark_removals(struct directory_sink *ds, struct retention_scan *scan,
			 const char *new_service)
{
	uint64_t total = 0, newest_size = 0;
	size_t *order;
	struct timespec now;
	int64_t now_ms;

	clock_gettime(CLOCK_REALTIME, &now);
	now_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;

	order = malloc((scan->n_files ? scan->n_files : 1) * sizeof(*order));
	if (!order)
		return -ENOMEM;
	for (size_t i = 0; i < scan->n_files; i++)
		order[i] = i;
	qsort_r(order, scan->n_files, sizeof(*order), compare_age, scan);

	for (size_t i = 0; i < scan->n_files; i++) {
		struct profile_file *file = &scan->files[order[i]];
		int64_t age_ms = now_ms - file->stamp * 1000;

		if (file->newest)
			newest_size = file->size;
		if (ds->max_age_ms && !file->newest && age_ms > 0 &&
		    (uint64_t)age_ms > ds->max_age_ms)
			file->remove = true;
		else
			total += file->size;
	}
	for (size_t i = 0; ds->max_total_bytes && i < scan->n_files; i++) {
		struct profile_file *file = &scan->files[order[i]];

		if (total <= ds->max_total_bytes)
			break;
		if (file->remove || file->newest)
			continue;
		file->remove = true;
		total -= file->size;
	}
	if (ds->max_total_bytes && total > ds->max_total_bytes && !ds->warned_small_limit) {
		ds->warned_small_limit = true;
		log_warn("sinks[].max_total_size (%llu bytes) for %s is smaller than one profile "
			 "of %s (%llu bytes); keeping only the newest profile",
			 (unsigned long long)ds->max_total_bytes, ds->path, new_service,
			 (unsigned long long)newest_size);
	}
	free(order);
	return 0;
}

/* Removes the marked files, directory by directory, and the directories left empty. */
static void remove_marked(struct directory_sink *ds, struct retention_scan *scan, int root_fd)
{
	char msg_path[MSG_PATH_MAX];
	uint64_t failures = 0;

	for (size_t d = 0; d < scan->n_dirs; d++) {
		const struct service_dir *dir = &scan->dirs[d];
		size_t removed = 0, marked = 0;
		int fd = -1;

		for (size_t i = dir->first; i < dir->first + dir->count; i++)
			marked += scan->files[i].remove;
		if (!marked)
			continue;
		fd = openat(root_fd, dir->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0) {
			failures += marked;
			continue;
		}
		for (size_t i = dir->first; i < dir->first + dir->count; i++) {
			const struct profile_file *file = &scan->files[i];

			if (!file->remove)
				continue;
			if (unlinkat(fd, file->name, 0) && errno != ENOENT) {
				if (!failures)
					log_warn("cannot remove old profile %s: %s",
						 full_path(ds, dir->name, file->name, msg_path,
							   sizeof(msg_path)),
						 strerror(errno));
				failures++;
				continue;
			}
			log_debug("removed old profile %s",
				  full_path(ds, dir->name, file->name, msg_path, sizeof(msg_path)));
			ds->stats.files_removed++;
			removed++;
		}
		close(fd);
		/* Fails, as it should, when the directory holds anything else. */
		if (removed == dir->count)
			unlinkat(root_fd, dir->name, AT_REMOVEDIR);
	}
	if (failures > 1)
		log_warn("could not remove %llu old profiles in %s",
			 (unsigned long long)failures, ds->path);
}

static void apply_retention(struct directory_sink *ds, int root_fd, const char *service,
			    const char *name)
{
	struct retention_scan scan = { 0 };
	int ret;

	if (!ds->max_total_bytes && !ds->max_age_ms)
		return;
	ret = scan_profiles(&scan, root_fd, ds->max_total_bytes != 0, service, name);
	if (!ret)
		ret = mark_removals(ds, &scan, service);
	if (ret)
		log_warn("cannot apply the retention limits to %s: %s", ds->path, strerror(-ret));
	else
		remove_marked(ds, &scan, root_fd);
	scan_free(&scan);
}

static int directory_sink_submit(struct sink *sink, const struct profile_record *record)
{
	struct directory_sink *ds = (struct directory_sink *)sink;
	char service[SERVICE_DIR_MAX + 1], stamp[STAMP_MAX], name[PROFILE_NAME_MAX];
	char msg_path[MSG_PATH_MAX];
	int root_fd, svc_fd, ret;
	bool created;

	if (!record || (!record->pprof_gz && record->pprof_gz_len)) {
		log_failure(ds, "directory sink %s was given no profile", ds->path);
		ds->stats.errors++;
		return -EINVAL;
	}
	service_dir_name(record->service, service);
	ret = format_stamp(record->start_ns, stamp, sizeof(stamp));
	if (ret) {
		log_failure(ds,
			    "cannot name the profile of %s in %s: start time %lld ns is out of "
			    "range",
			    service, ds->path, (long long)record->start_ns);
		ds->stats.errors++;
		return ret;
	}

	root_fd = open_root(ds);
	if (root_fd < 0) {
		ds->stats.errors++;
		return root_fd;
	}
	svc_fd = open_service_dir(ds, root_fd, service, &created);
	if (svc_fd < 0) {
		ret = svc_fd;
		goto out;
	}
	ret = write_profile_file(ds, svc_fd, service, stamp, record, name, sizeof(name));
	close(svc_fd);
	if (ret)
		goto out;
	/* A new service directory's own entry must survive a crash too. */
	if (created && fsync(root_fd))
		log_warn("cannot sync directory %s: %s", ds->path, strerror(errno));

	ds->stats.profiles_written++;
	ds->stats.bytes_written += record->pprof_gz_len;
	if (ds->next_failure_log_ms) {
		if (ds->failures_unsaid)
			log_info("profile directory %s: writing again (%llu more failures after "
				 "the last one logged)",
				 ds->path, (unsigned long long)ds->failures_unsaid);
		else
			log_info("profile directory %s: writing again", ds->path);
		ds->failures_unsaid = 0;
		ds->next_failure_log_ms = 0;
	}
	log_debug("wrote %s (%zu bytes)",
		  full_path(ds, service, name, msg_path, sizeof(msg_path)), record->pprof_gz_len);
	apply_retention(ds, root_fd, service, name);
out:
	if (ret)
		ds->stats.errors++;
	close(root_fd);
	return ret;
}

static void directory_sink_stats(const struct sink *sink, struct sink_stats *out)
{
	const struct directory_sink *ds = (const struct directory_sink *)sink;

	*out = ds->stats;
}

static void directory_sink_free(struct sink *sink)
{
	struct directory_sink *ds = (struct directory_sink *)sink;

	free(ds->path);
	free(ds);
}

static const struct sink_ops directory_sink_ops = {
	.type = "directory",
	.submit = directory_sink_submit,
	.stats = directory_sink_stats,
	.free = directory_sink_free,
};

int directory_sink__new(const struct directory_sink_opts *opts, struct sink **out, char *err,
			size_t err_len)
{
	struct directory_sink *ds;
	struct stat st;
	size_t len;
	int ret;

	*out = NULL;
	if (!opts->path || opts->path[0] != '/') {
		set_err(err, err_len,
			"directory sink path \"%s\" is not absolute (set sinks[].path to a path "
			"starting with /)",
			opts->path ? opts->path : "");
		return -EINVAL;
	}
	len = strlen(opts->path);
	if (len >= PATH_MAX) {
		set_err(err, err_len, "directory sink path %.64s... is too long (set a shorter "
			"sinks[].path)", opts->path);
		return -ENAMETOOLONG;
	}

	ds = calloc(1, sizeof(*ds));
	if (!ds) {
		set_err(err, err_len, "out of memory");
		return -ENOMEM;
	}
	ds->base.ops = &directory_sink_ops;
	ds->max_total_bytes = opts->max_total_bytes;
	ds->max_age_ms = opts->max_age_ms;
	ds->path = strdup(opts->path);
	if (!ds->path) {
		set_err(err, err_len, "out of memory");
		ret = -ENOMEM;
		goto fail;
	}
	/* Trailing slashes would only show up doubled in every message. */
	while (len > 1 && ds->path[len - 1] == '/')
		ds->path[--len] = '\0';

	ret = make_dirs(ds->path, DIR_MODE, "directory", DIRS_HINT, err, err_len);
	if (ret)
		goto fail;
	if (stat(ds->path, &st)) {
		ret = -errno;
		set_err(err, err_len, "cannot use %s for profiles: %s (set sinks[].path)",
			ds->path, strerror(-ret));
		goto fail;
	}
	if (!S_ISDIR(st.st_mode)) {
		ret = -ENOTDIR;
		set_err(err, err_len,
			"cannot write profiles to %s: it exists and is not a directory (move it "
			"away or set sinks[].path)",
			ds->path);
		goto fail;
	}
	ret = probe_writable(ds->path, err, err_len);
	if (ret)
		goto fail;

	*out = &ds->base;
	return 0;

fail:
	free(ds->path);
	free(ds);
	return ret;
}
