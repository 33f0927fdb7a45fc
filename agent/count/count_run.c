/* Running a command under liballocscope-count.so and reading back what it counted.
 *
 * The handoff is a directory whose path reaches the library in ALLOCSCOPE_COUNT_DIR; every
 * process of the command (children and exec'd programs inherit the environment) writes
 * <pid>-<n>.count there at exit. A command run by root may drop privileges (setpriv, a
 * daemon's setuid): its processes must still be able to write there, whatever user they
 * became, and no one else may. So: an outer directory made with mkdtemp, mode 0711 under root
 * (anyone may pass through, no one else may list it; 0700 otherwise: no other user can be the
 * command), and in it the directory the library writes to, named with 128 random bits that
 * only the command's environment carries, mode 1733 under root (anyone who knows the name may
 * create a file, no one may list or remove another's files; 0700 otherwise). Whatever a
 * hostile command puts there, it is read as data, never followed: each entry is opened with
 * O_NOFOLLOW | O_NONBLOCK (a symbolic link fails, a FIFO does not block), must be a regular
 * file with one link, at most 512 MiB, and is refused with its name otherwise; entries are
 * removed relative to the directory's descriptor, and root writes nothing else there.
 *
 * A file holds its process's stacks with exact counts and a copy of its maps; each file gets
 * its own key for the symbolizer (a pid above any real one, never read from /proc), so two
 * processes that reused a pid never mix. */
#include "count/count_run.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "profile/alloc_profile.h"
#include "symbolize/symbolizer.h"
#include "util/grow.h"
#include "util/hash.h"
#include "util/small_file.h"

#define COUNT_FILE_MAX	 (512u << 20) /* one process's counts and maps */
#define COUNT_MAX_FRAMES 64	      /* as liballocscope-count.so keeps */
#define FIRST_FILE_KEY	 0x7f000000   /* symbolizer keys: above any pid (pid_max <= 2^22) */

struct counted_stack {
	pid_t key;
	uint64_t objects, bytes;
	size_t n_frames;
	uint64_t frames[COUNT_MAX_FRAMES];
};

struct count_state {
	struct count_result *r;
	struct counted_stack *stacks;
	size_t n_stacks, cap_stacks;
	size_t n_files;
};

int count_find_library(char *out, size_t len, char *err, size_t err_len)
{
	static const char *const relative[] = { "liballocscope-count.so",
						"../lib/liballocscope-count.so" };
	const char *env = getenv("ALLOCSCOPE_COUNT_LIB");
	char self[PATH_MAX], *slash;
	ssize_t n;

	if (env && *env) {
		if (env[0] != '/' || access(env, R_OK) != 0) {
			snprintf(err, err_len,
				 "ALLOCSCOPE_COUNT_LIB=%s: not a readable absolute path to "
				 "liballocscope-count.so",
				 env);
			return -ENOENT;
		}
		snprintf(out, len, "%s", env);
		return 0;
	}
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		self[n] = '\0';
		slash = strrchr(self, '/');
		if (slash)
			slash[1] = '\0';
		for (size_t i = 0; i < sizeof(relative) / sizeof(relative[0]); i++) {
			int w = snprintf(out, len, "%s%s", self, relative[i]);

			if (w > 0 && (size_t)w < len && access(out, R_OK) == 0)
				return 0;
		}
	}
	snprintf(err, err_len,
		 "cannot find liballocscope-count.so next to allocscope or in ../lib: run `make` "
		 "(it builds build/liballocscope-count.so) or set ALLOCSCOPE_COUNT_LIB");
	return -ENOENT;
}

/* In the child: the environment for the library, then the command. Never returns. */
static void exec_counted(const struct count_opts *opts, const char *library, const char *dir)
{
	const char *old = getenv("LD_PRELOAD");
	char *preload = NULL;

	if (old && *old) {
		if (asprintf(&preload, "%s:%s", library, old) < 0)
			_exit(127);
	}
	if (setenv("LD_PRELOAD", preload ? preload : library, 1) != 0 ||
	    setenv("ALLOCSCOPE_COUNT_DIR", dir, 1) != 0)
		_exit(127);
	if (opts->no_aslr && personality(ADDR_NO_RANDOMIZE) == -1)
		fprintf(stderr,
			"allocscope: --no-aslr: cannot turn address randomisation off (%s; a "
			"container's seccomp policy?): running with it on\n",
			strerror(errno));
	execvp(opts->command[0], opts->command);
	fprintf(stderr, "allocscope: cannot run %s: %s\n", opts->command[0], strerror(errno));
	_exit(errno == ENOENT ? 127 : 126);
}

static int run_command(const struct count_opts *opts, const char *library, const char *dir,
		       int *status, char *err, size_t err_len)
{
	struct sigaction ignore = { .sa_handler = SIG_IGN }, old_int, old_quit;
	pid_t pid, got;
	int wstatus = 0, ret = 0;

	fflush(NULL);
	/* Like system(): Ctrl-C reaches the command (same process group); we wait for it. */
	sigemptyset(&ignore.sa_mask);
	sigaction(SIGINT, &ignore, &old_int);
	sigaction(SIGQUIT, &ignore, &old_quit);
	pid = fork();
	if (pid < 0) {
		ret = -errno;
		snprintf(err, err_len, "cannot start %s: fork: %s", opts->command[0],
			 strerror(-ret));
		goto out;
	}
	if (pid == 0) {
		sigaction(SIGINT, &old_int, NULL);
		sigaction(SIGQUIT, &old_quit, NULL);
		exec_counted(opts, library, dir);
	}
	do
		got = waitpid(pid, &wstatus, 0);
	while (got < 0 && errno == EINTR);
	if (got < 0) {
		ret = -errno;
		snprintf(err, err_len, "cannot wait for %s: %s", opts->command[0], strerror(-ret));
		goto out;
	}
	if (WIFEXITED(wstatus))
		*status = WEXITSTATUS(wstatus);
	else if (WIFSIGNALED(wstatus))
		*status = 128 + WTERMSIG(wstatus);
	else
		*status = 1;
out:
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGQUIT, &old_quit, NULL);
	return ret;
}

/* An unsigned number in base 10 or 16 after optional spaces: digits only (no sign, no 0x). */
static bool parse_u64(const char **p, uint64_t *out, int base)
{
	char *end;
	char c;

	while (**p == ' ')
		(*p)++;
	c = **p;
	if (!(c >= '0' && c <= '9') && !(base == 16 && c >= 'a' && c <= 'f'))
		return false;
	errno = 0;
	*out = strtoull(*p, &end, base);
	if (errno || end == *p)
		return false;
	*p = end;
	return true;
}

static int add_stack_line(struct count_state *st, pid_t key, const char *line, const char *name)
{
	struct counted_stack *s;
	const char *p = line;
	uint64_t objects, bytes, frame;

	if (!parse_u64(&p, &objects, 10) || !parse_u64(&p, &bytes, 10))
		return -EINVAL;
	if (array_grow((void **)&st->stacks, &st->cap_stacks, st->n_stacks, sizeof(*st->stacks),
		       64))
		return -ENOMEM;
	s = &st->stacks[st->n_stacks];
	memset(s, 0, sizeof(*s));
	s->key = key;
	s->objects = objects;
	s->bytes = bytes;
	while (*p && s->n_frames < COUNT_MAX_FRAMES) {
		if (!parse_u64(&p, &frame, 16))
			return -EINVAL;
		s->frames[s->n_frames++] = frame;
	}
	if (s->n_frames < 2)
		return -EINVAL;
	(void)name;
	st->n_stacks++;
	return 0;
}

/* Parses one process's file; its stacks are added once its maps are known. */
static int read_count_text(struct count_state *st, const char *name, char *text, size_t len,
			   char *err, size_t err_len)
{
	struct count_result *r = st->r;
	pid_t key = (pid_t)(FIRST_FILE_KEY + st->n_files);
	size_t first = st->n_stacks;
	uint64_t leaf = 0;
	char *line = text, *maps = NULL;
	unsigned number = 0;
	int ret = 0;

	while (line < text + len && !maps) {
		char *nl = memchr(line, '\n', (size_t)(text + len - line));
		const char *p;
		uint64_t a, b;

		if (!nl)
			break;
		*nl = '\0';
		number++;
		if (number == 1 && strcmp(line, "allocscope-count 1") != 0) {
			ret = -EINVAL;
		} else if (strncmp(line, "stack ", 6) == 0) {
			ret = add_stack_line(st, key, line + 6, name);
		} else if (strncmp(line, "unattributed ", 13) == 0) {
			p = line + 13;
			if (parse_u64(&p, &a, 10) && parse_u64(&p, &b, 10)) {
				r->unattributed_objects += a;
				r->unattributed_bytes += b;
				r->objects += a;
				r->bytes += b;
			} else {
				ret = -EINVAL;
			}
		} else if (strncmp(line, "leaf ", 5) == 0) {
			p = line + 5;
			if (!parse_u64(&p, &leaf, 16))
				ret = -EINVAL;
		} else if (strcmp(line, "maps") == 0) {
			maps = nl + 1;
		}
		if (ret)
			break;
		line = nl + 1;
	}
	if (!ret && !maps)
		ret = -EINVAL;
	if (ret == -EINVAL)
		snprintf(err, err_len,
			 "count file %s is malformed (line %u): was it written by another "
			 "version of liballocscope-count.so?",
			 name, number ? number : 1);
	if (!ret) {
		ret = symbolizer__add_saved_process(r->symbolizer, key, maps,
						    (size_t)(text + len - maps));
		if (ret == -EINVAL)
			snprintf(err, err_len, "count file %s has malformed maps", name);
	}
	for (size_t i = first; !ret && i < st->n_stacks; i++) {
		struct counted_stack *s = &st->stacks[i];

		/* The allocator's malloc as the leaf, as the kernel path has it: the site is then
		 * named by the same rules (the allocator's library is looked through). */
		if (leaf)
			s->frames[0] = leaf;
		ret = alloc_profile__add_counted(r->profile, (uint32_t)key, s->frames, s->n_frames,
						 s->objects, s->bytes);
		r->objects += s->objects;
		r->bytes += s->bytes;
	}
	if (ret == -ENOMEM)
		snprintf(err, err_len, "out of memory reading the counts");
	st->n_files++;
	return ret;
}

static int read_count_file(struct count_state *st, int dir_fd, const char *name, char *err,
			   size_t err_len)
{
	struct dynbuf buf;
	struct stat sb;
	int fd, ret;

	fd = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &sb) != 0) {
		ret = -errno;
		if (fd >= 0)
			close(fd);
		snprintf(err, err_len, "cannot read count file %s: %s%s", name, strerror(-ret),
			 ret == -ELOOP ? " (a symbolic link: the command wrote into the counts "
					 "directory; counts files are never followed)"
				       : "");
		return ret;
	}
	if (!S_ISREG(sb.st_mode) || sb.st_nlink != 1) {
		close(fd);
		snprintf(err, err_len,
			 "cannot read count file %s: not a regular file with one link (the command "
			 "wrote into the counts directory; only liballocscope-count.so's files are "
			 "read)",
			 name);
		return -EPERM;
	}
	dynbuf_init(&buf, COUNT_FILE_MAX);
	ret = small_file_read_all(fd, &buf);
	close(fd);
	if (ret)
		snprintf(err, err_len, "cannot read count file %s: %s", name,
			 ret == -EFBIG ? "larger than 512 MiB" : strerror(-ret));
	else
		ret = read_count_text(st, name, buf.data ? buf.data : (char *)"", buf.len, err,
				      err_len);
	dynbuf_free(&buf);
	return ret;
}

/* Reads every count file of the counts directory (name, in the outer directory dir) and
 * removes what is in it, it and dir. */
static int read_count_dir(struct count_state *st, const char *dir, const char *name, char *err,
			  size_t err_len)
{
	int outer = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC), inner = -1;
	DIR *d = NULL;
	struct dirent *de;
	int ret = 0;

	if (outer >= 0)
		inner = openat(outer, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (inner >= 0)
		d = fdopendir(inner);
	if (!d) {
		ret = -errno;
		snprintf(err, err_len, "cannot read %s/%s: %s", dir, name, strerror(-ret));
		if (inner >= 0)
			close(inner);
		goto out;
	}
	while ((de = readdir(d))) {
		size_t n = strlen(de->d_name);

		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (!ret && n > 6 && strcmp(de->d_name + n - 6, ".count") == 0)
			ret = read_count_file(st, dirfd(d), de->d_name, err, err_len);
		/* A directory the command made is removed when empty; nothing is followed. */
		if (unlinkat(dirfd(d), de->d_name, 0) != 0 && errno == EISDIR)
			unlinkat(dirfd(d), de->d_name, AT_REMOVEDIR);
	}
	closedir(d);
out:
	if (outer >= 0) {
		unlinkat(outer, name, AT_REMOVEDIR);
		close(outer);
	}
	rmdir(dir);
	st->r->processes = st->n_files;
	return ret;
}

/* The counts directory: dir (mkdtemp) and in it name, as the file's opening explains. */
static int make_count_dir(char *dir, size_t dir_len, char *name, size_t name_len, char *err,
			  size_t err_len)
{
	const char *tmp = getenv("TMPDIR");
	bool root = geteuid() == 0;
	unsigned char secret[16];
	int outer = -1, inner = -1, ret = 0;

	if (!tmp || tmp[0] != '/')
		tmp = "/tmp";
	if (snprintf(dir, dir_len, "%s/allocscope-count.XXXXXX", tmp) >= (int)dir_len ||
	    !mkdtemp(dir)) {
		ret = -errno;
		snprintf(err, err_len, "cannot make a private directory in %s for the counts: %s",
			 tmp, strerror(-ret));
		return ret;
	}
	if (getrandom(secret, sizeof(secret), 0) != (ssize_t)sizeof(secret)) {
		ret = -EIO;
		snprintf(err, err_len, "cannot name the counts directory: no random bytes");
		goto cleanup;
	}
	for (size_t i = 0; i < sizeof(secret) && 2 * i + 2 < name_len; i++)
		snprintf(name + 2 * i, 3, "%02x", secret[i]);
	outer = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (outer < 0 || mkdirat(outer, name, 0700) != 0) {
		ret = -errno;
		goto fail;
	}
	inner = openat(outer, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (inner < 0 || (root && (fchmod(outer, 0711) != 0 || fchmod(inner, 01733) != 0))) {
		ret = -errno;
		goto fail;
	}
	close(inner);
	close(outer);
	return 0;
fail:
	snprintf(err, err_len, "cannot make the counts directory in %s: %s", dir, strerror(-ret));
cleanup:
	if (inner >= 0)
		close(inner);
	if (outer >= 0) {
		unlinkat(outer, name, AT_REMOVEDIR);
		close(outer);
	}
	rmdir(dir);
	return ret;
}

/* ---- Sites and inclusive function totals ---- */

static int compare_by_objects(const void *a, const void *b)
{
	const struct budget_measure *x = a, *y = b;

	if (x->objects != y->objects)
		return x->objects < y->objects ? 1 : -1;
	if (x->bytes != y->bytes)
		return x->bytes < y->bytes ? 1 : -1;
	return strcmp(x->name, y->name);
}

static int collect_sites(struct count_result *r)
{
	struct alloc_profile_totals totals;
	struct alloc_site *sites;
	size_t n = 0;
	int ret;

	alloc_profile__totals(r->profile, &totals);
	sites = calloc(totals.stacks + 2, sizeof(*sites));
	if (!sites)
		return -ENOMEM;
	ret = alloc_profile__top_sites(r->profile, sites, totals.stacks + 2, &n);
	if (!ret)
		r->sites = calloc(n + 1, sizeof(*r->sites));
	if (!ret && !r->sites)
		ret = -ENOMEM;
	for (size_t i = 0; !ret && i < n; i++) {
		r->sites[i].name = strdup(sites[i].function);
		if (!r->sites[i].name)
			ret = -ENOMEM;
		r->sites[i].objects = (uint64_t)(sites[i].objects + 0.5);
		r->sites[i].bytes = (uint64_t)(sites[i].bytes + 0.5);
		r->n_sites = i + 1;
	}
	free(sites);
	if (!ret)
		qsort(r->sites, r->n_sites, sizeof(*r->sites), compare_by_objects);
	return ret;
}

struct function_slot {
	char *name;
	uint64_t objects, bytes;
	size_t last_stack; /* + 1: the stack that last added to it (counted once per stack) */
};

struct function_table {
	struct function_slot *slots;
	size_t cap, used;
};

static uint64_t hash_name(const char *s)
{
	uint64_t h = 0;

	for (; *s; s++)
		h = hash_combine(h, (unsigned char)*s);
	return h;
}

static int function_grow(struct function_table *t);

static struct function_slot *function_slot(struct function_table *t, const char *name)
{
	size_t i;

	if ((t->used + 1) * 2 > t->cap && function_grow(t) != 0)
		return NULL;
	for (i = hash_name(name) & (t->cap - 1); t->slots[i].name; i = (i + 1) & (t->cap - 1))
		if (strcmp(t->slots[i].name, name) == 0)
			return &t->slots[i];
	t->slots[i].name = strdup(name);
	if (!t->slots[i].name)
		return NULL;
	t->used++;
	return &t->slots[i];
}

static int function_grow(struct function_table *t)
{
	size_t cap = t->cap ? t->cap * 2 : 256;
	struct function_slot *slots = calloc(cap, sizeof(*slots));

	if (!slots)
		return -ENOMEM;
	for (size_t k = 0; k < t->cap; k++) {
		size_t i;

		if (!t->slots[k].name)
			continue;
		for (i = hash_name(t->slots[k].name) & (cap - 1); slots[i].name;
		     i = (i + 1) & (cap - 1))
			;
		slots[i] = t->slots[k];
	}
	free(t->slots);
	t->slots = slots;
	t->cap = cap;
	return 0;
}

/* Every function on a stack (inline ones too) gets the stack's counts once. */
static int collect_functions(struct count_state *st)
{
	struct count_result *r = st->r;
	struct function_table t = { 0 };
	size_t k = 0;
	int ret = 0;

	for (size_t i = 0; i < st->n_stacks && !ret; i++) {
		const struct counted_stack *s = &st->stacks[i];

		for (size_t f = 1; f < s->n_frames && !ret; f++) {
			struct symbolized_frame frame;

			if (symbolizer__resolve(r->symbolizer, s->key, s->frames[f], true,
						&frame) != 0)
				continue;
			for (size_t l = 0; l < frame.n_lines; l++) {
				struct function_slot *slot;

				if (!frame.lines[l].function)
					continue;
				slot = function_slot(&t, frame.lines[l].function);
				if (!slot) {
					ret = -ENOMEM;
					break;
				}
				if (slot->last_stack == i + 1)
					continue;
				slot->last_stack = i + 1;
				slot->objects += s->objects;
				slot->bytes += s->bytes;
			}
		}
	}
	if (!ret) {
		r->functions = calloc(t.used + 1, sizeof(*r->functions));
		if (!r->functions)
			ret = -ENOMEM;
	}
	for (size_t i = 0; i < t.cap; i++) {
		if (!t.slots[i].name)
			continue;
		if (ret) {
			free(t.slots[i].name);
			continue;
		}
		r->functions[k].name = t.slots[i].name;
		r->functions[k].objects = t.slots[i].objects;
		r->functions[k].bytes = t.slots[i].bytes;
		k++;
	}
	r->n_functions = k;
	free(t.slots);
	if (!ret)
		qsort(r->functions, r->n_functions, sizeof(*r->functions), compare_by_objects);
	return ret;
}

void count_result__free(struct count_result *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->n_sites; i++)
		free((char *)r->sites[i].name);
	for (size_t i = 0; i < r->n_functions; i++)
		free((char *)r->functions[i].name);
	free(r->sites);
	free(r->functions);
	alloc_profile__free(r->profile);
	symbolizer__free(r->symbolizer);
	free(r);
}

void count_result__measurements(const struct count_result *r, struct budget_measurements *m)
{
	m->sites = r->sites;
	m->n_sites = r->n_sites;
	m->functions = r->functions;
	m->n_functions = r->n_functions;
	m->total_objects = r->objects;
	m->total_bytes = r->bytes;
}

int count_run(const struct count_opts *opts, struct count_result **out, char *err,
	      size_t err_len)
{
	struct count_state st = { 0 };
	struct count_result *r = calloc(1, sizeof(*r));
	char library[PATH_MAX], dir[PATH_MAX], name[40], path[PATH_MAX + 40];
	int ret;

	*out = NULL;
	if (!r)
		return -ENOMEM;
	st.r = r;
	if (opts->library)
		snprintf(library, sizeof(library), "%s", opts->library);
	else if ((ret = count_find_library(library, sizeof(library), err, err_len)) != 0)
		goto fail;
	r->symbolizer = symbolizer__new();
	ret = r->symbolizer ? alloc_profile__new(1, r->symbolizer, &r->profile) : -ENOMEM;
	if (!ret && opts->skip_frames)
		ret = alloc_profile__set_skip_frames(r->profile, opts->skip_frames, err, err_len);
	if (ret) {
		if (ret == -ENOMEM)
			snprintf(err, err_len, "out of memory");
		goto fail;
	}
	ret = make_count_dir(dir, sizeof(dir), name, sizeof(name), err, err_len);
	if (ret)
		goto fail;
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	ret = run_command(opts, library, path, &r->exit_status, err, err_len);
	if (ret) {
		rmdir(path);
		rmdir(dir);
		goto fail;
	}
	r->command_failed = r->exit_status != 0;
	ret = read_count_dir(&st, dir, name, err, err_len);
	if (!ret)
		ret = collect_sites(r);
	if (!ret)
		ret = collect_functions(&st);
	if (ret) {
		if (ret == -ENOMEM)
			snprintf(err, err_len, "out of memory");
		goto fail;
	}
	free(st.stacks);
	*out = r;
	return 0;
fail:
	free(st.stacks);
	count_result__free(r);
	return ret;
}
