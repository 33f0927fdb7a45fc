/* The directory sink against real directories under /tmp: what it refuses at start, the exact
 * names and bytes it writes, and what its retention limits remove and, as much, what they
 * must leave alone. Every case works in its own mkdtemp directory, removed at the end. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "unit.h"
#include "util/log.h"
#include "export/directory_sink.h"
#include "export/sink.h"

#define NS_PER_SEC 1000000000LL

/* 2024-03-05T06:07:08Z */
#define T0 1709618828LL

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	/* A test may have taken write permission away. */
	if (flag == FTW_DP)
		chmod(path, 0700);
	remove(path);
	return 0;
}

static void remove_tree(const char *path)
{
	chmod(path, 0700);
	nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static char *make_tmp(char *buf, size_t len)
{
	snprintf(buf, len, "/tmp/allocscope-dirsink-XXXXXX");
	if (!mkdtemp(buf)) {
		perror("mkdtemp");
		exit(2);
	}
	return buf;
}

static int compare_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The directory's entries (hidden ones included), sorted, joined by ','; "" when empty and
 * "(missing)" when the directory does not exist. */
static const char *listing(const char *path)
{
	static char out[8192];
	char *names[256];
	size_t n = 0, used = 0;
	struct dirent *ent;
	DIR *dir;

	out[0] = '\0';
	dir = opendir(path);
	if (!dir)
		return "(missing)";
	while (n < 256) {
		ent = readdir(dir);
		if (!ent)
			break;
		if (strcmp(ent->d_name, ".") == 0 || strcmp(ent->d_name, "..") == 0)
			continue;
		names[n++] = strdup(ent->d_name);
	}
	closedir(dir);
	qsort(names, n, sizeof(names[0]), compare_names);
	for (size_t i = 0; i < n; i++) {
		used += (size_t)snprintf(out + used, sizeof(out) - used, "%s%s", i ? "," : "",
					 names[i]);
		free(names[i]);
	}
	return out;
}

static void write_bytes(const char *path, const void *buf, size_t len)
{
	FILE *f = fopen(path, "w");

	if (!f || fwrite(buf, 1, len, f) != len) {
		perror(path);
		exit(2);
	}
	fclose(f);
}

static void write_filler(const char *path, size_t len)
{
	char buf[8192];

	memset(buf, 'n', sizeof(buf));
	write_bytes(path, buf, len < sizeof(buf) ? len : sizeof(buf));
}

static bool file_has(const char *path, const void *expected, size_t len)
{
	static uint8_t buf[1 << 16];
	FILE *f = fopen(path, "r");
	size_t n;

	if (!f)
		return false;
	n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	return n == len && memcmp(buf, expected, len) == 0;
}

static bool exists(const char *path)
{
	struct stat st;

	return lstat(path, &st) == 0;
}

static unsigned int mode_of(const char *path)
{
	struct stat st;

	if (stat(path, &st))
		return 0;
	return st.st_mode & 07777;
}

/* "alloc-YYYYMMDDTHHMMSSZ" for a time, computed apart from the sink. */
static const char *stamp_of(int64_t secs, char *buf, size_t len)
{
	time_t t = (time_t)secs;
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, len, "alloc-%Y%m%dT%H%M%SZ", &tm);
	return buf;
}

static struct sink *new_sink(const char *path, uint64_t max_total_bytes, uint64_t max_age_ms)
{
	struct directory_sink_opts opts = {
		.path = path,
		.max_total_bytes = max_total_bytes,
		.max_age_ms = max_age_ms,
	};
	struct sink *sink = NULL;
	char err[512] = "";
	int ret;

	ret = directory_sink__new(&opts, &sink, err, sizeof(err));
	if (ret) {
		fprintf(stderr, "  directory_sink__new(%s): %d %s\n", path, ret, err);
		return NULL;
	}
	return sink;
}

static int submit(struct sink *sink, const char *service, int64_t start_ns, const void *bytes,
		  size_t len)
{
	struct profile_label labels[] = { { "service_name", service ? service : "" } };
	struct profile_record record = {
		.service = service,
		.labels = labels,
		.n_labels = 1,
		.start_ns = start_ns,
		.duration_ns = 60 * NS_PER_SEC,
		.pprof_gz = bytes,
		.pprof_gz_len = len,
	};

	return sink__submit(sink, &record);
}

/* Everything written to stderr between begin and end, so messages can be checked. */
static int saved_stderr = -1;
static char captured[16384];

static void capture_begin(void)
{
	FILE *f = tmpfile();

	fflush(stderr);
	saved_stderr = dup(2);
	dup2(fileno(f), 2);
	fclose(f); /* fd 2 keeps the file open */
}

static const char *capture_end(void)
{
	size_t n;

	fflush(stderr);
	lseek(2, 0, SEEK_SET);
	n = (size_t)read(2, captured, sizeof(captured) - 1);
	captured[n == (size_t)-1 ? 0 : n] = '\0';
	dup2(saved_stderr, 2);
	close(saved_stderr);
	return captured;
}

static int count_of(const char *haystack, const char *needle)
{
	int n = 0;

	for (const char *p = strstr(haystack, needle); p; p = strstr(p + 1, needle))
		n++;
	return n;
}

static void test_new_creates_missing_parents(void)
{
	char tmp[64], path[128], probe_dir[128];
	struct sink_stats stats;
	struct sink *sink;

	make_tmp(tmp, sizeof(tmp));
	snprintf(path, sizeof(path), "%s/var/lib/profiles/", tmp);
	sink = new_sink(path, 0, 0);
	CHECK(sink != NULL);
	if (sink) {
		CHECK_STR(sink__type(sink), "directory");
		sink__stats(sink, &stats);
		CHECK_EQ_U64(stats.profiles_written, 0);
		CHECK_EQ_U64(stats.errors, 0);
	}
	snprintf(probe_dir, sizeof(probe_dir), "%s/var/lib/profiles", tmp);
	CHECK_EQ_U64(mode_of(probe_dir), 0750);
	snprintf(probe_dir, sizeof(probe_dir), "%s/var", tmp);
	CHECK_EQ_U64(mode_of(probe_dir), 0750);
	/* The write probe cleans up after itself. */
	snprintf(probe_dir, sizeof(probe_dir), "%s/var/lib/profiles", tmp);
	CHECK_STR(listing(probe_dir), "");
	sink__free(sink);

	/* An existing directory is fine, and a second start leaves it as it was. */
	sink = new_sink(probe_dir, 0, 0);
	CHECK(sink != NULL);
	CHECK_STR(listing(probe_dir), "");
	sink__free(sink);
	remove_tree(tmp);
}

static void test_new_refuses_relative_path(void)
{
	struct directory_sink_opts opts = { .path = "profiles" };
	struct sink *sink = (struct sink *)&opts;
	char err[512] = "";
	char cwd_file[PATH_MAX];

	CHECK_EQ_U64(directory_sink__new(&opts, &sink, err, sizeof(err)), -EINVAL);
	CHECK(sink == NULL);
	CHECK(strstr(err, "\"profiles\" is not absolute") != NULL);
	CHECK(strstr(err, "sinks[].path") != NULL);
	/* Nothing was created relative to the working directory. */
	getcwd(cwd_file, sizeof(cwd_file) - 16);
	strcat(cwd_file, "/profiles");
	CHECK(!exists(cwd_file));

	opts.path = "";
	err[0] = '\0';
	CHECK_EQ_U64(directory_sink__new(&opts, &sink, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "not absolute") != NULL);
}

static void test_new_refuses_a_file(void)
{
	struct directory_sink_opts opts = { 0 };
	char tmp[64], path[128], below[160], err[512] = "";
	struct sink *sink = NULL;

	make_tmp(tmp, sizeof(tmp));
	snprintf(path, sizeof(path), "%s/profiles", tmp);
	write_bytes(path, "x", 1);
	opts.path = path;
	CHECK_EQ_U64(directory_sink__new(&opts, &sink, err, sizeof(err)), -ENOTDIR);
	CHECK(sink == NULL);
	CHECK(strstr(err, path) != NULL);
	CHECK(strstr(err, "is not a directory") != NULL);
	CHECK(file_has(path, "x", 1));

	/* A file where a parent should be. */
	snprintf(below, sizeof(below), "%s/sub", path);
	opts.path = below;
	err[0] = '\0';
	CHECK_EQ_U64(directory_sink__new(&opts, &sink, err, sizeof(err)), -ENOTDIR);
	CHECK(strstr(err, below) != NULL);
	remove_tree(tmp);
}

/* Root ignores directory modes, so the cases that must fail for root too use kernel
 * filesystems: sysfs refuses to create files (EACCES, or EROFS when mounted read-only), and
 * procfs refuses to create directories. A chmod 0500 directory is tried only without root. */
static void test_new_refuses_unwritable(void)
{
	struct directory_sink_opts opts = { .path = "/sys" };
	struct sink *sink = NULL;
	char err[512] = "";
	int ret;

	ret = directory_sink__new(&opts, &sink, err, sizeof(err));
	CHECK(ret == -EACCES || ret == -EROFS || ret == -EPERM);
	CHECK(sink == NULL);
	CHECK(strstr(err, "cannot write profiles to /sys: ") != NULL);
	CHECK(strstr(err, "check the directory's owner and mode, or set sinks[].path") != NULL);

	opts.path = "/proc/allocscope-test/profiles";
	err[0] = '\0';
	ret = directory_sink__new(&opts, &sink, err, sizeof(err));
	CHECK(ret < 0);
	CHECK(sink == NULL);
	CHECK(strstr(err, "cannot create directory /proc/allocscope-test") != NULL);
	CHECK(!exists("/proc/allocscope-test"));

	if (geteuid() != 0) {
		char tmp[64], path[128];

		make_tmp(tmp, sizeof(tmp));
		snprintf(path, sizeof(path), "%s/ro", tmp);
		mkdir(path, 0500);
		opts.path = path;
		err[0] = '\0';
		CHECK_EQ_U64(directory_sink__new(&opts, &sink, err, sizeof(err)), -EACCES);
		CHECK(strstr(err, path) != NULL);
		remove_tree(tmp);
	}
}

static void test_submit_writes_exact_bytes(void)
{
	static const uint8_t gz[] = { 0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00,
				      0x00, 0xff, 0x0a, 0x00, 0x0d, 0x0a, 0x1a };
	char tmp[64], path[128], svc[160], file[224];
	struct sink_stats stats;
	struct sink *sink;

	make_tmp(tmp, sizeof(tmp));
	snprintf(path, sizeof(path), "%s/profiles", tmp);
	sink = new_sink(path, 0, 0);
	if (!sink) {
		CHECK(sink != NULL);
		remove_tree(tmp);
		return;
	}
	/* The sub-second part does not change the name. */
	CHECK_EQ_U64(submit(sink, "checkout", T0 * NS_PER_SEC + 999999999, gz, sizeof(gz)), 0);
	snprintf(svc, sizeof(svc), "%s/checkout", path);
	snprintf(file, sizeof(file), "%s/alloc-20240305T060708Z.pb.gz", svc);
	CHECK(file_has(file, gz, sizeof(gz)));
	CHECK_STR(listing(path), "checkout");
	CHECK_STR(listing(svc), "alloc-20240305T060708Z.pb.gz"); /* no temp file left */
	CHECK_EQ_U64(mode_of(svc), 0750);
	CHECK_EQ_U64(mode_of(file), 0640);

	sink__stats(sink, &stats);
	CHECK_EQ_U64(stats.profiles_written, 1);
	CHECK_EQ_U64(stats.bytes_written, sizeof(gz));
	CHECK_EQ_U64(stats.errors, 0);
	CHECK_EQ_U64(stats.profiles_dropped, 0);
	CHECK_EQ_U64(stats.files_removed, 0);

	/* An empty profile is still a file of its own. */
	CHECK_EQ_U64(submit(sink, "checkout", (T0 + 61) * NS_PER_SEC, "", 0), 0);
	snprintf(file, sizeof(file), "%s/alloc-20240305T060809Z.pb.gz", svc);
	CHECK(file_has(file, "", 0));
	sink__free(sink);
	remove_tree(tmp);
}

static void test_service_names(void)
{
	static const struct {
		const char *service;
		const char *dir;
	} cases[] = {
		{ "my svc/../x", "my_svc_.._x" },
		{ "..", "_." },
		{ ".hidden", "_hidden" },
		{ "/", "_" },
		{ "", "unknown" },
		{ "caf\xc3\xa9", "caf__" },
		{ "a-b_c.D9", "a-b_c.D9" },
	};
	char tmp[64], path[128], dir[512], expected[1024], long_name[201];
	struct sink *sink;
	int64_t t = T0;

	make_tmp(tmp, sizeof(tmp));
	snprintf(path, sizeof(path), "%s/profiles", tmp);
	sink = new_sink(path, 0, 0);
	if (!sink) {
		CHECK(sink != NULL);
		remove_tree(tmp);
		return;
	}
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		CHECK_EQ_U64(submit(sink, cases[i].service, t * NS_PER_SEC, "p", 1), 0);
		snprintf(dir, sizeof(dir), "%s/%s", path, cases[i].dir);
		if (!exists(dir))
			fprintf(stderr, "  service \"%s\": no directory %s\n", cases[i].service,
				cases[i].dir);
		CHECK(exists(dir));
	}
	CHECK_EQ_U64(submit(sink, NULL, t * NS_PER_SEC, "p", 1), 0);
	memset(long_name, 'x', 200);
	long_name[200] = '\0';
	CHECK_EQ_U64(submit(sink, long_name, t * NS_PER_SEC, "p", 1), 0);
	long_name[128] = '\0';

	/* Exactly these directories, all inside PATH, none hidden. */
	snprintf(expected, sizeof(expected), "_,_.,_hidden,a-b_c.D9,caf__,my_svc_.._x,unknown,%s",
		 long_name);
	CHECK_STR(listing(path), expected);
	CHECK_STR(listing(tmp), "profiles");
	/* NULL and "" share "unknown": the second one got the next name. */
	snprintf(dir, sizeof(dir), "%s/unknown", path);
	CHECK_STR(listing(dir), "alloc-20240305T060708Z-1.pb.gz,alloc-20240305T060708Z.pb.gz");
	sink__free(sink);
	remove_tree(tmp);
}

static void test_same_second_gets_next_number(void)
{
	char tmp[64], path[128], svc[160], file[224];
	struct sink *sink;

	make_tmp(tmp, sizeof(tmp));
	snprintf(path, sizeof(path), "%s/profiles", tmp);
	snprintf(svc, sizeof(svc), "%s/api", path);
	sink = new_sink(path, 0, 0);
	if (!sink) {
		CHECK(sink != NULL);
		remove_tree(tmp);
		return;
	}
	CHECK_EQ_U64(submit(sink, "api", T0 * NS_PER_SEC, "one", 3), 0);
	CHECK_EQ_U64(submit(sink, "api", T0 * NS_PER_SEC + 5, "two", 3), 0);
	CHECK_EQ_U64(submit(sink, "api", T0 * NS_PER_SEC + 10, "three", 5), 0);
	CHECK_STR(listing(svc), "alloc-20240305T060708Z-1.pb.gz,alloc-20240305T060708Z-2.pb.gz,"
				"alloc-20240305T060708Z.pb.gz");
	snprintf(file, sizeof(file), "%s/alloc-20240305T060708Z.pb.gz", svc);
	CHECK(file_has(file, "one", 3));
	snprintf(file, sizeof(file), "%s/alloc-20240305T060708Z-1.pb.gz", svc);
	CHECK(file_has(file, "two", 3));
	snprintf(file, sizeof(file), "%s/alloc-20240305T060708Z-2.pb.gz", svc);
	CHECK(file_has(file, "three", 5));
	sink__free(sink);

	/* A restarted agent never overwrites what the previous one wrote. */
	sink = new_sink(path, 0, 0);
	CHECK(sink != NULL);
	if (sink)
		CHECK_EQ_U64(submit(sink, "api", T0 * NS_PER_SEC, "four", 4), 0);
	snprintf(file, sizeof(file), "%s/alloc-20240305T060708Z-3.pb.gz", svc);
	CHECK(file_has(file, "four", 4));
	snprintf(file, sizeof(file), "%s/alloc-20240305T060708Z.pb.gz", svc);
	CHECK(file_has(file, "one", 3));
	sink__free(sink);
	remove_tree(tmp);
}

/* Files the sink did not write, placed where retention looks, each of which would be
 * removed by a sink that matched names loosely, recursed, or followed links. */
static void plant_unrelated(const char *tmp, const char *path)
{
	char p[256], target[256];

	snprintf(p, sizeof(p), "%s/notes.txt", path);
	write_filler(p, 5000);
	snprintf(p, sizeof(p), "%s/svc", path);
	mkdir(p, 0750);
	snprintf(p, sizeof(p), "%s/svc/notes.txt", path);
	write_filler(p, 5000);
	snprintf(p, sizeof(p), "%s/svc/alloc-19990101T000000Z.pb.gz.bak", path);
	write_filler(p, 100);
	snprintf(p, sizeof(p), "%s/svc/alloc-19990101T000000Z-0.pb.gz", path);
	write_filler(p, 100);
	snprintf(p, sizeof(p), "%s/svc/alloc-1999-01-01.pb.gz", path);
	write_filler(p, 100);
	snprintf(p, sizeof(p), "%s/svc/deep", path);
	mkdir(p, 0750);
	snprintf(p, sizeof(p), "%s/svc/deep/alloc-19990101T000000Z.pb.gz", path);
	write_filler(p, 100);
	snprintf(p, sizeof(p), "%s/.hidden", path);
	mkdir(p, 0750);
	snprintf(p, sizeof(p), "%s/.hidden/alloc-19990101T000000Z.pb.gz", path);
	write_filler(p, 100);
	snprintf(target, sizeof(target), "%s/outside.pb.gz", tmp);
	write_filler(target, 100);
	snprintf(p, sizeof(p), "%s/svc/alloc-19990101T000001Z.pb.gz", path);
	symlink(target, p);
	snprintf(p, sizeof(p), "%s/linked", path);
	symlink(tmp, p); /* a symlinked "service directory" */
	snprintf(p, sizeof(p), "%s/alloc-19990101T000000Z.pb.gz", tmp);
	write_filler(p, 100);
}

/* plant_unrelated's files in svc, in listing order: these sort before any profile of this
 * century, these after. */
#define UNRELATED_BEFORE                                                                     \
	"alloc-1999-01-01.pb.gz,alloc-19990101T000000Z-0.pb.gz,"                             \
	"alloc-19990101T000000Z.pb.gz.bak,alloc-19990101T000001Z.pb.gz"
#define UNRELATED_AFTER "deep,notes.txt"

static void test_size_retention_removes_oldest(void)
{
	char tmp[64], path[128], svc[160], other[160], expected[1024], p[256];
	char s1[32], s2[32], s3[32], s4[32];
	uint8_t payload[100];
	struct sink_stats stats;
	struct sink *sink;

	make_tmp(tmp, sizeof(tmp));
	snprintf(path, sizeof(path), "%s/profiles", tmp);
	snprintf(svc, sizeof(svc), "%s/svc", path);
	snprintf(other, sizeof(other), "%s/other", path);
	memset(payload, 'p', sizeof(payload));
	sink = new_sink(path, 250, 0);
	if (!sink) {
		CHECK(sink != NULL);
		remove_tree(tmp);
		return;
	}
	plant_unrelated(tmp, path);

	CHECK_EQ_U64(submit(sink, "svc", T0 * NS_PER_SEC, payload, 100), 0);
	CHECK_EQ_U64(submit(sink, "svc", (T0 + 1) * NS_PER_SEC, payload, 100), 0);
	stamp_of(T0, s1, sizeof(s1));
	stamp_of(T0 + 1, s2, sizeof(s2));
	stamp_of(T0 + 2, s3, sizeof(s3));
	stamp_of(T0 + 3, s4, sizeof(s4));
	snprintf(expected, sizeof(expected), "%s,%s.pb.gz,%s.pb.gz,%s", UNRELATED_BEFORE, s1, s2,
		 UNRELATED_AFTER);
	CHECK_STR(listing(svc), expected);

	/* 300 bytes > 250: the oldest goes. The 10,000 bytes of notes.txt do not count. */
	CHECK_EQ_U64(submit(sink, "svc", (T0 + 2) * NS_PER_SEC, payload, 100), 0);
	snprintf(expected, sizeof(expected), "%s,%s.pb.gz,%s.pb.gz,%s", UNRELATED_BEFORE, s2, s3,
		 UNRELATED_AFTER);
	CHECK_STR(listing(svc), expected);

	/* The oldest across services goes, whichever service is writing. */
	CHECK_EQ_U64(submit(sink, "other", (T0 + 3) * NS_PER_SEC, payload, 100), 0);
	snprintf(expected, sizeof(expected), "%s,%s.pb.gz,%s", UNRELATED_BEFORE, s3,
		 UNRELATED_AFTER);
	CHECK_STR(listing(svc), expected);
	snprintf(expected, sizeof(expected), "%s.pb.gz", s4);
	CHECK_STR(listing(other), expected);

	sink__stats(sink, &stats);
	CHECK_EQ_U64(stats.profiles_written, 4);
	CHECK_EQ_U64(stats.bytes_written, 400);
	CHECK_EQ_U64(stats.files_removed, 2);
	CHECK_EQ_U64(stats.errors, 0);

	/* Everything unrelated is intact. */
	CHECK_STR(listing(path), ".hidden,linked,notes.txt,other,svc");
	CHECK_STR(listing(tmp), "alloc-19990101T000000Z.pb.gz,outside.pb.gz,profiles");
	snprintf(p, sizeof(p), "%s/svc/deep", path);
	CHECK_STR(listing(p), "alloc-19990101T000000Z.pb.gz");
	snprintf(p, sizeof(p), "%s/.hidden", path);
	CHECK_STR(listing(p), "alloc-19990101T000000Z.pb.gz");
	sink__free(sink);
	remove_tree(tmp);
}

/* Within one second the names say the order: T, T-1, T-2, ... (not the byte order of the
 * names, where "T-1" sorts before "T"). */
static void test_size_retention_same_second(void)
{
	char tmp[64], path[128], svc[160];
	struct sink *sink;
	int64_t start = T0 * NS_PER_SEC;

	make_tmp(tmp, sizeof(tmp));
	snprintf(path, sizeof(path), "%s/profiles", tmp);
	snprintf(svc, sizeof(svc), "%s/svc", path);
	sink = new_sink(path, 25, 0);
	if (!sink) {
		CHECK(sink != NULL);
		remove_tree(tmp);
		return;
	}
	for (int i = 0; i < 12; i++)
		CHECK_EQ_U64(submit(sink, "svc", start, "0123456789", 10), 0);
	CHECK_STR(listing(svc), "alloc-20240305T060708Z-10.pb.gz,alloc-20240305T060708Z-11.pb.gz");
	sink__free(sink);
	remove_tree(tmp);
}

static void test_limit_below_one_profile(void)
{
	char tmp[64], path[128], p[256], expected[256];
	char s1[32];
	uint8_t payload[100];
	struct sink_stats stats;
	struct sink *sink;
	const char *log;

	make_tmp(tmp, sizeof(tmp));
	snprintf(path, sizeof(path), "%s/profiles", tmp);
	memset(payload, 'q', sizeof(payload));
	sink = new_sink(path, 50, 0);
	if (!sink) {
		CHECK(sink != NULL);
		remove_tree(tmp);
		return;
	}
	capture_begin();
	CHECK_EQ_U64(submit(sink, "a", T0 * NS_PER_SEC, payload, 100), 0);
	CHECK_EQ_U64(submit(sink, "b", (T0 + 1) * NS_PER_SEC, payload, 100), 0);
	CHECK_EQ_U64(submit(sink, "b", (T0 + 2) * NS_PER_SEC, payload, 100), 0);
	log = capture_end();

	/* The newest profile stays even though it alone is over the limit; "a" lost its only
	 * file and its directory with it. */
	CHECK_STR(listing(path), "b");
	snprintf(p, sizeof(p), "%s/b", path);
	snprintf(expected, sizeof(expected), "%s.pb.gz", stamp_of(T0 + 2, s1, sizeof(s1)));
	CHECK_STR(listing(p), expected);
	CHECK_EQ_U64(count_of(log, "is smaller than one profile"), 1);
	CHECK(strstr(log, path) != NULL);

	sink__stats(sink, &stats);
	CHECK_EQ_U64(stats.profiles_written, 3);
	CHECK_EQ_U64(stats.files_removed, 2);
	sink__free(sink);
	remove_tree(tmp);
}

static void test_age_retention(void)
{
	char tmp[64], path[128], svc[160], p[256], expected[1024];
	char recent[32], old[32];
	const uint64_t day_ms = 24 * 3600 * 1000ULL;
	int64_t now = (int64_t)time(NULL);
	struct sink_stats stats;
	struct sink *sink;

	make_tmp(tmp, sizeof(tmp));
	snprintf(path, sizeof(path), "%s/profiles", tmp);
	snprintf(svc, sizeof(svc), "%s/svc", path);
	sink = new_sink(path, 0, day_ms);
	if (!sink) {
		CHECK(sink != NULL);
		remove_tree(tmp);
		return;
	}
	plant_unrelated(tmp, path);
	/* Old names with new mtimes: the name decides. */
	snprintf(p, sizeof(p), "%s/alloc-20000101T000000Z.pb.gz", svc);
	write_filler(p, 10);
	snprintf(p, sizeof(p), "%s/alloc-20000101T000000Z-1.pb.gz", svc);
	write_filler(p, 10);
	stamp_of(now - 3600, recent, sizeof(recent));
	snprintf(p, sizeof(p), "%s/%s.pb.gz", svc, recent);
	write_filler(p, 10);

	/* A profile older than the limit is still kept when it is the one just written. */
	CHECK_EQ_U64(submit(sink, "svc", 981173106 * NS_PER_SEC, "old", 3), 0);
	snprintf(expected, sizeof(expected), "%s,alloc-20010203T040506Z.pb.gz,%s.pb.gz,%s",
		 UNRELATED_BEFORE, recent, UNRELATED_AFTER);
	CHECK_STR(listing(svc), expected);
	sink__stats(sink, &stats);
	CHECK_EQ_U64(stats.files_removed, 2);

	CHECK_EQ_U64(submit(sink, "svc", now * NS_PER_SEC, "new", 3), 0);
	stamp_of(now, old, sizeof(old));
	/* The hour-old file is within the day; the 2001 one is not. */
	snprintf(expected, sizeof(expected), "%s,%s.pb.gz,%s.pb.gz,%s", UNRELATED_BEFORE, recent,
		 old, UNRELATED_AFTER);
	CHECK_STR(listing(svc), expected);
	sink__stats(sink, &stats);
	CHECK_EQ_U64(stats.files_removed, 3);
	CHECK_EQ_U64(stats.profiles_written, 2);
	CHECK_STR(listing(path), ".hidden,linked,notes.txt,svc");
	sink__free(sink);
	remove_tree(tmp);
}

/* A write that fails halfway (here: the file size limit, which stops root too) leaves
 * neither the partial profile nor the temporary file, and is counted as an error. */
static void test_failed_write_leaves_nothing(void)
{
	static uint8_t big[60000];
	char tmp[64], path[128], svc[160];
	struct rlimit saved, small;
	struct sink_stats stats;
	struct sink *sink;
	const char *log;
	int ret;

	make_tmp(tmp, sizeof(tmp));
	snprintf(path, sizeof(path), "%s/profiles", tmp);
	snprintf(svc, sizeof(svc), "%s/svc", path);
	memset(big, 'b', sizeof(big));
	sink = new_sink(path, 0, 0);
	if (!sink) {
		CHECK(sink != NULL);
		remove_tree(tmp);
		return;
	}
	signal(SIGXFSZ, SIG_IGN);
	getrlimit(RLIMIT_FSIZE, &saved);
	small = saved;
	small.rlim_cur = 4096;
	setrlimit(RLIMIT_FSIZE, &small);
	capture_begin();
	ret = submit(sink, "svc", T0 * NS_PER_SEC, big, sizeof(big));
	log = capture_end();
	setrlimit(RLIMIT_FSIZE, &saved);
	signal(SIGXFSZ, SIG_DFL);

	CHECK_EQ_U64(ret, -EFBIG);
	CHECK_STR(listing(svc), "");
	CHECK(strstr(log, "cannot write profile ") != NULL);
	CHECK(strstr(log, "/profiles/svc/alloc-20240305T060708Z.pb.gz: File too large") != NULL);
	sink__stats(sink, &stats);
	CHECK_EQ_U64(stats.errors, 1);
	CHECK_EQ_U64(stats.profiles_written, 0);
	CHECK_EQ_U64(stats.bytes_written, 0);
	CHECK_EQ_U64(stats.profiles_dropped, 0);

	/* The next interval writes normally, under the name the failed one would have had. */
	CHECK_EQ_U64(submit(sink, "svc", T0 * NS_PER_SEC, big, sizeof(big)), 0);
	CHECK_STR(listing(svc), "alloc-20240305T060708Z.pb.gz");
	sink__stats(sink, &stats);
	CHECK_EQ_U64(stats.errors, 1);
	CHECK_EQ_U64(stats.profiles_written, 1);
	CHECK_EQ_U64(stats.bytes_written, sizeof(big));
	sink__free(sink);
	remove_tree(tmp);
}

/* Every service fails at every interval while the disk is full: one line is logged, the
 * repeats are counted (each one in stats.errors) and said when the sink writes again. */
static void test_repeated_failures_logged_once(void)
{
	static uint8_t big[60000];
	char tmp[64], path[128], service[16];
	struct rlimit saved, small;
	struct sink_stats stats;
	struct sink *sink;
	enum log_level level = log_max_level;
	const char *log;

	make_tmp(tmp, sizeof(tmp));
	snprintf(path, sizeof(path), "%s/profiles", tmp);
	memset(big, 'b', sizeof(big));
	sink = new_sink(path, 0, 0);
	if (!sink) {
		CHECK(sink != NULL);
		remove_tree(tmp);
		return;
	}
	signal(SIGXFSZ, SIG_IGN);
	getrlimit(RLIMIT_FSIZE, &saved);
	small = saved;
	small.rlim_cur = 4096;
	setrlimit(RLIMIT_FSIZE, &small);
	log_set_level(LOG_INFO);
	capture_begin();
	for (int i = 0; i < 20; i++) {
		snprintf(service, sizeof(service), "svc%d", i);
		CHECK_EQ_U64(submit(sink, service, T0 * NS_PER_SEC, big, sizeof(big)), -EFBIG);
	}
	setrlimit(RLIMIT_FSIZE, &saved);
	CHECK_EQ_U64(submit(sink, "svc0", T0 * NS_PER_SEC, big, sizeof(big)), 0);
	log = capture_end();
	log_set_level(level);
	signal(SIGXFSZ, SIG_DFL);

	CHECK_EQ_U64(count_of(log, "cannot write profile "), 1);
	CHECK(strstr(log, "writing again (19 more failures after the last one logged)") != NULL);
	sink__stats(sink, &stats);
	CHECK_EQ_U64(stats.errors, 20);
	CHECK_EQ_U64(stats.profiles_written, 1);
	sink__free(sink);
	remove_tree(tmp);
}

static void test_service_path_not_a_directory(void)
{
	char tmp[64], path[128], p[256], target[160];
	struct sink_stats stats;
	struct sink *sink;
	const char *log;
	int ret;

	make_tmp(tmp, sizeof(tmp));
	snprintf(path, sizeof(path), "%s/profiles", tmp);
	sink = new_sink(path, 0, 0);
	if (!sink) {
		CHECK(sink != NULL);
		remove_tree(tmp);
		return;
	}
	snprintf(p, sizeof(p), "%s/svc", path);
	write_bytes(p, "mine", 4);
	capture_begin();
	ret = submit(sink, "svc", T0 * NS_PER_SEC, "x", 1);
	log = capture_end();
	CHECK_EQ_U64(ret, -ENOTDIR);
	CHECK(file_has(p, "mine", 4));
	CHECK(strstr(log, p) != NULL);
	CHECK(strstr(log, "is not a directory") != NULL);

	/* A symlink would lead the profiles where retention never looks. */
	snprintf(target, sizeof(target), "%s/elsewhere", tmp);
	mkdir(target, 0750);
	snprintf(p, sizeof(p), "%s/link", path);
	symlink(target, p);
	capture_begin();
	ret = submit(sink, "link", T0 * NS_PER_SEC, "x", 1);
	capture_end();
	CHECK(ret == -ELOOP || ret == -ENOTDIR);
	CHECK_STR(listing(target), "");

	sink__stats(sink, &stats);
	CHECK_EQ_U64(stats.errors, 2);
	CHECK_EQ_U64(stats.profiles_written, 0);
	sink__free(sink);
	remove_tree(tmp);
}

static void test_directory_removed_while_running(void)
{
	char tmp[64], path[128], file[224];
	struct sink *sink;

	make_tmp(tmp, sizeof(tmp));
	snprintf(path, sizeof(path), "%s/a/profiles", tmp);
	sink = new_sink(path, 0, 0);
	if (!sink) {
		CHECK(sink != NULL);
		remove_tree(tmp);
		return;
	}
	snprintf(file, sizeof(file), "%s/a", tmp);
	remove_tree(file);
	capture_begin();
	CHECK_EQ_U64(submit(sink, "svc", T0 * NS_PER_SEC, "x", 1), 0);
	capture_end();
	snprintf(file, sizeof(file), "%s/svc/alloc-20240305T060708Z.pb.gz", path);
	CHECK(file_has(file, "x", 1));
	sink__free(sink);
	remove_tree(tmp);
}

/* Names follow the UTC calendar second the interval started in, rounding towards the past
 * on both sides of the epoch, up to the last time an int64 of nanoseconds can hold. */
static void test_names_at_extreme_times(void)
{
	char tmp[64], path[128], svc[160];
	struct sink_stats stats;
	struct sink *sink;

	make_tmp(tmp, sizeof(tmp));
	snprintf(path, sizeof(path), "%s/profiles", tmp);
	snprintf(svc, sizeof(svc), "%s/svc", path);
	sink = new_sink(path, 0, 0);
	if (!sink) {
		CHECK(sink != NULL);
		remove_tree(tmp);
		return;
	}
	CHECK_EQ_U64(submit(sink, "svc", 0, "x", 1), 0);
	CHECK_EQ_U64(submit(sink, "svc", -1, "x", 1), 0);
	CHECK_EQ_U64(submit(sink, "svc", INT64_MAX, "x", 1), 0);
	CHECK_STR(listing(svc), "alloc-19691231T235959Z.pb.gz,alloc-19700101T000000Z.pb.gz,"
				"alloc-22620411T234716Z.pb.gz");
	sink__stats(sink, &stats);
	CHECK_EQ_U64(stats.errors, 0);
	sink__free(sink);
	remove_tree(tmp);
}

int main(void)
{
	/* The modes checked below are the sink's with the usual service umask. */
	umask(022);
	RUN(test_new_creates_missing_parents);
	RUN(test_new_refuses_relative_path);
	RUN(test_new_refuses_a_file);
	RUN(test_new_refuses_unwritable);
	RUN(test_submit_writes_exact_bytes);
	RUN(test_service_names);
	RUN(test_same_second_gets_next_number);
	RUN(test_size_retention_removes_oldest);
	RUN(test_size_retention_same_second);
	RUN(test_limit_below_one_profile);
	RUN(test_age_retention);
	RUN(test_failed_write_leaves_nothing);
	RUN(test_repeated_failures_logged_once);
	RUN(test_service_path_not_a_directory);
	RUN(test_directory_removed_while_running);
	RUN(test_names_at_extreme_times);
	return unit_summary("directory_sink");
}
