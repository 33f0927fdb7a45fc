/* Unit tests for the pprof builder (agent/profile/pprof.c). The profile it writes is read
 * back by decoders that share no code with it: Go's `go tool pprof -raw` (the reference pprof
 * reader, which also validates ids and references) and `protoc --decode_raw` for field-level
 * facts. Both are required: if either is missing the test fails and says how to install it.
 * The rest checks atomic file replacement, interning, UTF-8 repair and, through a malloc
 * that fails on request, that every out-of-memory path reports -ENOMEM and leaks nothing. */
#include "unit.h"
#include "profile/pprof.h"
#include "profile/protobuf.h"

#include <dirent.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

/* --- a malloc that fails on request ---------------------------------------------------
 * glibc lets a program replace malloc, calloc, realloc and free; these count live blocks and
 * fail the Nth allocation after oom_arm(N). Under ASan the sanitizer owns malloc, so the
 * out-of-memory test is skipped there. */
#ifndef __SANITIZE_ADDRESS__
#define OOM_TORTURE 1
extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t size);
extern void __libc_free(void *p);

static long oom_countdown = -1; /* allocations left before the failing one; -1: off */
static bool oom_injected;
static long live_blocks;

static bool oom_should_fail(void)
{
	if (oom_countdown < 0)
		return false;
	if (oom_countdown-- == 0) {
		oom_injected = true;
		return true;
	}
	return false;
}

void *malloc(size_t size)
{
	void *p;

	if (oom_should_fail())
		return NULL;
	p = __libc_malloc(size);
	if (p)
		live_blocks++;
	return p;
}

void *calloc(size_t n, size_t size)
{
	void *p;

	if (oom_should_fail())
		return NULL;
	p = __libc_calloc(n, size);
	if (p)
		live_blocks++;
	return p;
}

void *realloc(void *old, size_t size)
{
	void *p;

	if (oom_should_fail())
		return NULL;
	p = __libc_realloc(old, size);
	if (!old && p)
		live_blocks++;
	else if (old && size == 0)
		live_blocks--;
	return p;
}

void free(void *p)
{
	if (p)
		live_blocks--;
	__libc_free(p);
}
#endif

/* --- helpers ----------------------------------------------------------------------------- */

static char tmp_root[512];

static void make_tmp_root(void)
{
	const char *base = getenv("TMPDIR");

	snprintf(tmp_root, sizeof(tmp_root), "%s/allocscope-pprof-XXXXXX",
		 base && *base ? base : "/tmp");
	if (!mkdtemp(tmp_root)) {
		fprintf(stderr, "cannot create a temporary directory under %s: %s\n",
			base && *base ? base : "/tmp", strerror(errno));
		tmp_root[0] = '\0';
	}
}

static void remove_tmp_root(void)
{
	char cmd[1024];

	if (!tmp_root[0])
		return;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp_root);
	if (system(cmd) != 0)
		fprintf(stderr, "note: could not remove %s\n", tmp_root);
}

static bool have_tool(const char *name)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", name);
	return system(cmd) == 0;
}

/* Run a shell command and return its output (stdout and stderr) as a malloc'ed string; NULL
 * unless it ran and exited 0. */
static char *run_capture(const char *cmd)
{
	size_t len = 0, cap = 4096, n;
	char *out = malloc(cap), *grown;
	FILE *f;
	int status;

	if (!out)
		return NULL;
	f = popen(cmd, "r");
	if (!f) {
		free(out);
		return NULL;
	}
	while ((n = fread(out + len, 1, cap - len - 1, f)) > 0) {
		len += n;
		if (cap - len - 1 == 0) {
			grown = realloc(out, cap * 2);
			if (!grown)
				break;
			out = grown;
			cap *= 2;
		}
	}
	out[len] = '\0';
	status = pclose(f);
	if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "  command failed (status %d): %s\n%s\n", status, cmd, out);
		free(out);
		return NULL;
	}
	return out;
}

/* Collapse runs of blanks so checks do not depend on pprof's column widths. */
static void squeeze_blanks(char *s)
{
	char *w = s;
	bool blank = false;

	for (; *s; s++) {
		if (*s == ' ' || *s == '\t') {
			if (!blank)
				*w++ = ' ';
			blank = true;
			continue;
		}
		blank = false;
		*w++ = *s;
	}
	*w = '\0';
}

/* "file.c:15:0 " -> "file.c:15 ": newer pprof versions print a source column after the line. */
static void drop_source_columns(char *s)
{
	char *w = s;

	while (*s) {
		if (s[0] == ':' && isdigit((unsigned char)s[1])) {
			char *line_end = s + 1, *col_end;

			while (isdigit((unsigned char)*line_end))
				line_end++;
			col_end = line_end + 1;
			if (line_end[0] == ':' && isdigit((unsigned char)line_end[1])) {
				while (isdigit((unsigned char)*col_end))
					col_end++;
				if (*col_end == ' ' || *col_end == '\n' || *col_end == '\0') {
					memmove(w, s, (size_t)(line_end - s));
					w += line_end - s;
					s = col_end;
					continue;
				}
			}
		}
		*w++ = *s++;
	}
	*w = '\0';
}

#define CHECK_CONTAINS(haystack, needle)                                                           \
	do {                                                                                       \
		const char *h_ = (haystack);                                                       \
		if (!h_ || !strstr(h_, (needle))) {                                                \
			fprintf(stderr, "  %s:%d: output lacks \"%s\"\n", __FILE__, __LINE__,      \
				(needle));                                                         \
			unit_case_failures++;                                                      \
		}                                                                                  \
	} while (0)

static int gunzip(const uint8_t *in, size_t in_len, uint8_t **out, size_t *out_len)
{
	size_t cap = in_len * 4 + 1024;
	uint8_t *buf = malloc(cap), *grown;
	z_stream zs;
	int rc;

	if (!buf)
		return -ENOMEM;
	memset(&zs, 0, sizeof(zs));
	if (inflateInit2(&zs, 15 + 16) != Z_OK) {
		free(buf);
		return -EINVAL;
	}
	zs.next_in = (Bytef *)in;
	zs.avail_in = (uInt)in_len;
	for (;;) {
		zs.next_out = buf + zs.total_out;
		zs.avail_out = (uInt)(cap - zs.total_out);
		rc = inflate(&zs, Z_NO_FLUSH);
		if (rc == Z_STREAM_END)
			break;
		if ((rc != Z_OK && rc != Z_BUF_ERROR) || zs.avail_out != 0 ||
		    !(grown = realloc(buf, cap * 2))) {
			inflateEnd(&zs);
			free(buf);
			return -EINVAL;
		}
		buf = grown;
		cap *= 2;
	}
	*out = buf;
	*out_len = zs.total_out;
	inflateEnd(&zs);
	return 0;
}

static uint8_t *read_file(const char *path, size_t *len)
{
	struct stat st;
	uint8_t *data;
	FILE *f = fopen(path, "rb");

	if (!f)
		return NULL;
	if (fstat(fileno(f), &st) != 0 || !(data = malloc((size_t)st.st_size + 1))) {
		fclose(f);
		return NULL;
	}
	*len = fread(data, 1, (size_t)st.st_size, f);
	fclose(f);
	return data;
}

/* Names in dir other than . and .. ; a temporary file left behind shows up here. */
static int count_entries(const char *dir, bool *saw_tmp)
{
	struct dirent *e;
	DIR *d = opendir(dir);
	int n = 0;

	*saw_tmp = false;
	if (!d)
		return -1;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (strstr(e->d_name, ".tmp."))
			*saw_tmp = true;
		n++;
	}
	closedir(d);
	return n;
}

/* --- a minimal wire reader, for facts checked without external tools -------------------- */

struct wire_field {
	uint32_t field;
	unsigned wire;
	uint64_t v;
	const uint8_t *p;
	size_t len;
};

static bool wire_varint(const uint8_t **pos, const uint8_t *end, uint64_t *v)
{
	unsigned shift = 0;

	*v = 0;
	while (*pos < end && shift < 64) {
		uint8_t c = *(*pos)++;

		*v |= (uint64_t)(c & 0x7f) << shift;
		if (!(c & 0x80))
			return true;
		shift += 7;
	}
	return false;
}

static bool wire_next(const uint8_t **pos, const uint8_t *end, struct wire_field *f)
{
	uint64_t key;

	if (*pos >= end || !wire_varint(pos, end, &key))
		return false;
	f->field = (uint32_t)(key >> 3);
	f->wire = key & 7;
	if (f->wire == 0)
		return wire_varint(pos, end, &f->v);
	if (f->wire != 2 || !wire_varint(pos, end, &f->v) || f->v > (uint64_t)(end - *pos))
		return false;
	f->p = *pos;
	f->len = (size_t)f->v;
	*pos += f->len;
	return true;
}

/* A profile decoded just enough for the checks below. */
struct decoded {
	const uint8_t *strings[200100];
	size_t string_lens[200100];
	size_t n_strings;
	uint64_t function_name[100100]; /* by function id */
	size_t n_functions;
	uint64_t last_function_id;
	size_t n_locations, n_samples;
	bool has_period_type, has_default_sample_type;
	size_t period_type_len;
	bool ok;
};

static struct decoded dec;

static void decode_profile(const uint8_t *data, size_t len)
{
	const uint8_t *pos = data, *end = data + len, *fp, *fend;
	struct wire_field f, g;
	uint64_t id, name;

	memset(&dec, 0, sizeof(dec));
	while (pos < end) {
		if (!wire_next(&pos, end, &f))
			return;
		if (f.field == 6 && f.wire == 2 && dec.n_strings < 200100) {
			dec.strings[dec.n_strings] = f.p;
			dec.string_lens[dec.n_strings++] = f.len;
		} else if (f.field == 5 && f.wire == 2) {
			id = 0;
			name = 0;
			fp = f.p;
			fend = f.p + f.len;
			while (fp < fend && wire_next(&fp, fend, &g)) {
				if (g.field == 1)
					id = g.v;
				if (g.field == 2)
					name = g.v;
			}
			if (id < 100100)
				dec.function_name[id] = name;
			dec.last_function_id = id;
			dec.n_functions++;
		} else if (f.field == 4) {
			dec.n_locations++;
		} else if (f.field == 2) {
			dec.n_samples++;
		} else if (f.field == 11 && f.wire == 2) {
			dec.has_period_type = true;
			dec.period_type_len = f.len;
		} else if (f.field == 14) {
			dec.has_default_sample_type = true;
		}
	}
	dec.ok = true;
}

static bool decoded_string_is(uint64_t index, const char *want)
{
	if (index >= dec.n_strings)
		return false;
	return dec.string_lens[index] == strlen(want) &&
	       memcmp(dec.strings[index], want, dec.string_lens[index]) == 0;
}

/* The decoded strings point into this buffer, so it lives until the next decode. */
static struct pb_buffer dec_buf;

static bool encode_and_decode(struct pprof_builder *b)
{
	pb_buffer__release(&dec_buf);
	pb_buffer__init(&dec_buf, 0);
	memset(&dec, 0, sizeof(dec));
	if (pprof_builder__encode(b, &dec_buf) != 0)
		return false;
	decode_profile(pb_buffer__data(&dec_buf), pb_buffer__len(&dec_buf));
	return dec.ok;
}

/* --- the reference profile ------------------------------------------------------------- */

static const struct pprof_value_type alloc_types[] = {
    {"alloc_objects", "count"},
    {"alloc_space", "bytes"},
};
static const struct pprof_value_type space_bytes = {"space", "bytes"};

static struct pprof_builder *new_alloc_builder(void)
{
	return pprof_builder__new(alloc_types, 2, space_bytes, 524288, "alloc_space");
}

/* Two mappings, five functions (one with an invalid UTF-8 name), four locations (one with
 * an inlined frame), three samples with string and numeric labels. */
static struct pprof_builder *build_reference_profile(void)
{
	struct pprof_mapping app = {
	    .memory_start = 0x400000,
	    .memory_limit = 0x500000,
	    .file_offset = 0,
	    .filename = "/usr/bin/app",
	    .build_id = "abcdef0123456789",
	    .has_functions = true,
	    .has_filenames = true,
	    .has_line_numbers = true,
	    .has_inline_frames = true,
	};
	struct pprof_mapping libc = {
	    .memory_start = 0x7f0000000000,
	    .memory_limit = 0x7f0000200000,
	    .file_offset = 0x28000,
	    .filename = "/lib/x86_64-linux-gnu/libc.so.6",
	    .has_functions = true,
	};
	struct pprof_label worker[] = {
	    {.key = "thread", .str = "worker"},
	    {.key = "bytes", .num = 512, .num_unit = "bytes"},
	};
	struct pprof_label big[] = {{.key = "bytes", .num = 524288, .num_unit = "bytes"}};
	uint64_t m_app, m_libc, f_main, f_make, f_inl, f_malloc, f_bad, l_main, l_make, l_malloc,
	    l_bad;
	struct pprof_builder *b;
	int64_t v1[] = {3, 1536}, v2[] = {1, 4096}, v3[] = {2, 1048576};
	int err = 0;

	b = new_alloc_builder();
	if (!b)
		return NULL;
	pprof_builder__set_time(b, 1700000000000000000LL, 10000000000LL);
	err |= pprof_builder__add_comment(b, "allocscope unit test");
	m_app = pprof_builder__add_mapping(b, &app);
	m_libc = pprof_builder__add_mapping(b, &libc);
	f_main = pprof_builder__function(b, "main", "main", "app.c", 10);
	f_make = pprof_builder__function(b, "make_node", "make_node", "app.c", 20);
	f_inl = pprof_builder__function(b, "inlined_helper", NULL, "app.c", 30);
	f_malloc = pprof_builder__function(b, "malloc", NULL, NULL, 0);
	f_bad = pprof_builder__function(b, "bad\xffname", NULL, "app.c", 40);
	{
		struct pprof_line main_line[] = {{f_main, 15}};
		struct pprof_line make_lines[] = {{f_inl, 33}, {f_make, 25}};
		struct pprof_line malloc_line[] = {{f_malloc, 0}};
		struct pprof_line bad_line[] = {{f_bad, 44}};

		l_main = pprof_builder__location(b, m_app, 0x401000, main_line, 1);
		l_make = pprof_builder__location(b, m_app, 0x401100, make_lines, 2);
		l_malloc = pprof_builder__location(b, m_libc, 0x7f0000001234, malloc_line, 1);
		l_bad = pprof_builder__location(b, m_app, 0x401200, bad_line, 1);
	}
	{
		uint64_t s1[] = {l_malloc, l_make, l_main};
		uint64_t s2[] = {l_make, l_main};
		uint64_t s3[] = {l_malloc, l_bad, l_main};

		err |= pprof_builder__add_sample(b, s1, 3, v1, worker, 2);
		err |= pprof_builder__add_sample(b, s2, 2, v2, NULL, 0);
		err |= pprof_builder__add_sample(b, s3, 3, v3, big, 1);
	}
	CHECK_EQ_U64(m_app, 1);
	CHECK_EQ_U64(m_libc, 2);
	CHECK_EQ_U64(f_main, 1);
	CHECK_EQ_U64(f_bad, 5);
	CHECK_EQ_U64(l_main, 1);
	CHECK_EQ_U64(l_bad, 4);
	CHECK_EQ_U64(err, 0);
	return b;
}

/* --- 2. independent decoders --------------------------------------------------------- */

static void test_go_pprof_reads_profile(void)
{
	char path[1024], cmd[8192], cwd[1024], gocache[2200];
	const char *build;
	struct pprof_builder *b;
	char *out;

	if (!have_tool("go")) {
		fprintf(stderr, "  go not found: the pprof check needs `go tool pprof`; run "
				"`sudo scripts/install-deps` (Debian package golang-go)\n");
		CHECK(!"go is installed");
		return;
	}
	b = build_reference_profile();
	CHECK(b != NULL);
	if (!b)
		return;
	snprintf(path, sizeof(path), "%s/ref.pb.gz", tmp_root);
	CHECK_EQ_U64(pprof_builder__write_file(b, path), 0);
	pprof_builder__free(b);

	/* A private HOME and GOCACHE keep go from touching the user's; -symbolize=none keeps
	 * pprof from looking for binaries or symbol servers. -raw shows the header, samples,
	 * locations and mappings; -traces shows each sample's stack by name, which does not depend
	 * on how a pprof version numbers locations (1.19 renumbers them by first use, 1.26 keeps
	 * the file's ids) nor on whether it prints source columns. */
	if (!getcwd(cwd, sizeof(cwd)))
		snprintf(cwd, sizeof(cwd), ".");
	build = getenv("BUILD");
	snprintf(gocache, sizeof(gocache), "%s/%s/gocache", build && build[0] == '/' ? "" : cwd,
		 build && *build ? build : "build");
	/* Go 1.24 and later build `go tool pprof` on first use into GOCACHE: one cache under the
	 * build directory (shared with the e2e tests) instead of a fresh one that rebuilds it. */
	snprintf(cmd, sizeof(cmd),
		 "cd '%s' && export HOME='%s' GOCACHE='%s' PPROF_TMPDIR='%s' GOFLAGS= && "
		 "go tool pprof -raw -symbolize=none '%s' 2>&1 && "
		 "go tool pprof -traces -sample_index=alloc_objects -symbolize=none '%s' 2>&1",
		 tmp_root, tmp_root, gocache, tmp_root, path, path);
	out = run_capture(cmd);
	CHECK(out != NULL);
	if (!out)
		return;
	squeeze_blanks(out);
	drop_source_columns(out);
	CHECK_CONTAINS(out, "PeriodType: space bytes");
	CHECK_CONTAINS(out, "Period: 524288");
	CHECK_CONTAINS(out, "Duration: 10s");
	CHECK_CONTAINS(out, "Comment: allocscope unit test");
	/* [dflt] marks default_sample_type. */
	CHECK_CONTAINS(out, "alloc_objects/count alloc_space/bytes[dflt]");
	CHECK_CONTAINS(out, "\n 3 1536: ");
	CHECK_CONTAINS(out, "\n thread:[worker]\n bytes:[512 bytes]\n");
	CHECK_CONTAINS(out, "\n 1 4096: ");
	CHECK_CONTAINS(out, "\n 2 1048576: ");
	CHECK_CONTAINS(out, "\n bytes:[524288 bytes]\n");
	CHECK_CONTAINS(out, ": 0x7f0000001234 M=2 malloc :0 s=0");
	/* The inlined frame first, then its caller, in the same location. */
	CHECK_CONTAINS(out, ": 0x401100 M=1 inlined_helper app.c:33 s=30()\n make_node app.c:25 s=20\n");
	CHECK_CONTAINS(out, ": 0x401000 M=1 main app.c:15 s=10");
	CHECK_CONTAINS(out, ": 0x401200 M=1 bad\xef\xbf\xbdname app.c:44 s=40");
	CHECK_CONTAINS(out, "1: 0x400000/0x500000/0x0 /usr/bin/app abcdef0123456789 "
			    "[FN][FL][LN][IN]");
	CHECK_CONTAINS(out, "2: 0x7f0000000000/0x7f0000200000/0x28000 "
			    "/lib/x86_64-linux-gnu/libc.so.6 [FN]\n");
	/* Each sample's stack, leaf first, with its object count. */
	CHECK_CONTAINS(out, " thread: worker\n bytes: 512B\n 3 malloc\n inlined_helper (inline)\n "
			    "make_node\n main\n");
	CHECK_CONTAINS(out, "\n 1 inlined_helper (inline)\n make_node\n main\n");
	CHECK_CONTAINS(out, " bytes: 512kB\n 2 malloc\n bad\xef\xbf\xbdname\n main\n");
	if (unit_case_failures)
		fprintf(stderr, "  go tool pprof -raw and -traces said:\n%s\n", out);
	free(out);
}

/* protoc --decode_raw prints one top-level field per line ("6: \"x\"") or per block
 * ("3 {" ... "}" at column 0). */
struct raw_field {
	unsigned field;
	bool block;
	const char *text; /* the value, or the block's lines */
};

static size_t parse_decode_raw(char *out, struct raw_field *fields, size_t max)
{
	size_t n = 0;
	char *line = out, *next, *block_start = NULL;
	unsigned field;
	int used;

	for (; line && *line; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		if (block_start) {
			if (!strcmp(line, "}")) {
				/* Terminate the block's text at the closing brace. */
				*line = '\0';
				block_start = NULL;
			} else if (line > block_start) {
				line[-1] = '\n'; /* rejoin the block's lines */
			}
			continue;
		}
		if (n == max || line[0] == ' ')
			continue;
		used = 0;
		if (sscanf(line, "%u: %n", &field, &used) == 1 && used > 0) {
			fields[n].field = field;
			fields[n].block = false;
			fields[n++].text = line + used;
		} else if (sscanf(line, "%u {%n", &field, &used) == 1 && used > 0) {
			fields[n].field = field;
			fields[n].block = true;
			fields[n++].text = next ? next : "";
			block_start = next;
		}
	}
	return n;
}

/* The value of the block's own (two-space indented) field, or -1 when absent. */
static int64_t block_value(const char *text, unsigned field)
{
	char want[32];
	const char *p = text;
	size_t wlen;

	snprintf(want, sizeof(want), "  %u: ", field);
	wlen = strlen(want);
	while (p && *p) {
		if (!strncmp(p, want, wlen))
			return strtoll(p + wlen, NULL, 10);
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	return -1;
}

static const char *block_text_of(const char *text, unsigned field)
{
	char want[32];
	const char *p = text;
	size_t wlen;

	snprintf(want, sizeof(want), "  %u: ", field);
	wlen = strlen(want);
	while (p && *p) {
		if (!strncmp(p, want, wlen))
			return p + wlen;
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	return NULL;
}

static void test_protoc_field_facts(void)
{
	static struct raw_field fields[256];
	const char *strtab[64];
	char path[1024], cmd[8192];
	size_t n, i, n_str = 0, n_map = 0, n_loc = 0, n_fn = 0, n_sample = 0, n_st = 0;
	int64_t default_st = -1, period = -1, comment = -1;
	const struct raw_field *period_type = NULL, *maps[8] = {0};
	struct pprof_builder *b;
	char *out;

	if (!have_tool("protoc") || !have_tool("gzip")) {
		fprintf(stderr, "  protoc or gzip not found: the field-level check needs "
				"`protoc --decode_raw`; run `sudo scripts/install-deps` (Debian "
				"package protobuf-compiler)\n");
		CHECK(!"protoc is installed");
		return;
	}
	b = build_reference_profile();
	CHECK(b != NULL);
	if (!b)
		return;
	snprintf(path, sizeof(path), "%s/raw.pb.gz", tmp_root);
	CHECK_EQ_U64(pprof_builder__write_file(b, path), 0);
	pprof_builder__free(b);
	snprintf(cmd, sizeof(cmd), "gzip -dc '%s' | protoc --decode_raw", path);
	out = run_capture(cmd);
	CHECK(out != NULL);
	if (!out)
		return;
	n = parse_decode_raw(out, fields, 256);
	for (i = 0; i < n; i++) {
		const struct raw_field *f = &fields[i];

		switch (f->field) {
		case 1:
			n_st++;
			break;
		case 2:
			n_sample++;
			/* Packed location ids and values print as one byte string each. */
			CHECK(!f->block ||
			      (block_text_of(f->text, 1) && block_text_of(f->text, 1)[0] == '"'));
			CHECK(f->block && block_text_of(f->text, 2) &&
			      block_text_of(f->text, 2)[0] == '"');
			break;
		case 3:
			if (n_map < 8)
				maps[n_map] = f;
			CHECK_EQ_U64(block_value(f->text, 1), ++n_map);
			break;
		case 4:
			CHECK_EQ_U64(block_value(f->text, 1), ++n_loc);
			break;
		case 5:
			CHECK_EQ_U64(block_value(f->text, 1), ++n_fn);
			break;
		case 6:
			/* A string that happens to parse as a message prints as a block: it
			 * still takes its slot in the table. */
			if (n_str < 64)
				strtab[n_str] = f->block ? "<block>" : f->text;
			n_str++;
			break;
		case 9:
			CHECK_STR(f->text, "1700000000000000000");
			break;
		case 10:
			CHECK_STR(f->text, "10000000000");
			break;
		case 11:
			period_type = f;
			break;
		case 12:
			period = strtoll(f->text, NULL, 10);
			break;
		case 13:
			comment = strtoll(f->text, NULL, 10);
			break;
		case 14:
			default_st = strtoll(f->text, NULL, 10);
			break;
		}
	}
	CHECK_EQ_U64(n_st, 2);
	CHECK_EQ_U64(n_sample, 3);
	CHECK_EQ_U64(n_map, 2);
	CHECK_EQ_U64(n_loc, 4);
	CHECK_EQ_U64(n_fn, 5);
	CHECK(n_str > 0 && n_str <= 64);
	if (n_str == 0 || n_str > 64)
		goto out;
	CHECK_STR(strtab[0], "\"\"");
	CHECK(default_st > 0 && default_st < (int64_t)n_str);
	if (default_st > 0 && default_st < (int64_t)n_str)
		CHECK_STR(strtab[default_st], "\"alloc_space\"");
	CHECK_EQ_U64(period, 524288);
	CHECK(comment > 0 && comment < (int64_t)n_str);
	if (comment > 0 && comment < (int64_t)n_str)
		CHECK_STR(strtab[comment], "\"allocscope unit test\"");
	CHECK(period_type != NULL);
	if (period_type) {
		int64_t t = block_value(period_type->text, 1),
			u = block_value(period_type->text, 2);

		CHECK(t > 0 && t < (int64_t)n_str && u > 0 && u < (int64_t)n_str);
		if (t > 0 && t < (int64_t)n_str && u > 0 && u < (int64_t)n_str) {
			CHECK_STR(strtab[t], "\"space\"");
			CHECK_STR(strtab[u], "\"bytes\"");
		}
	}
	if (maps[0] && maps[1]) {
		/* App: all four flags. libc: has_functions only, the rest left out as false. */
		CHECK_EQ_U64(block_value(maps[0]->text, 7), 1);
		CHECK_EQ_U64(block_value(maps[0]->text, 8), 1);
		CHECK_EQ_U64(block_value(maps[0]->text, 9), 1);
		CHECK_EQ_U64(block_value(maps[0]->text, 10), 1);
		CHECK_EQ_U64(block_value(maps[0]->text, 2), 0x400000);
		CHECK_EQ_U64(block_value(maps[0]->text, 3), 0x500000);
		CHECK_EQ_U64(block_value(maps[1]->text, 7), 1);
		CHECK_EQ_U64(block_value(maps[1]->text, 8), (uint64_t)-1);
		CHECK_EQ_U64(block_value(maps[1]->text, 9), (uint64_t)-1);
		CHECK_EQ_U64(block_value(maps[1]->text, 10), (uint64_t)-1);
		CHECK_EQ_U64(block_value(maps[1]->text, 4), 0x28000);
	}
	/* The invalid byte arrives as U+FFFD, which protoc prints as octal escapes. */
	for (i = 0; i < n_str; i++) {
		if (!strcmp(strtab[i], "\"bad\\357\\277\\275name\""))
			break;
	}
	CHECK(i < n_str);
out:
	free(out);
}

/* --- 3. files ------------------------------------------------------------------------ */

static void test_write_file_failures_leave_nothing(void)
{
	char dir[768], path[1024], afile[1024];
	struct pprof_builder *b = build_reference_profile();
	bool saw_tmp;
	FILE *f;

	CHECK(b != NULL);
	if (!b)
		return;
	snprintf(dir, sizeof(dir), "%s/fail", tmp_root);
	CHECK(mkdir(dir, 0755) == 0);

	snprintf(path, sizeof(path), "%s/missing/p.pb.gz", dir);
	CHECK_EQ_U64(pprof_builder__write_file(b, path), (uint64_t)-ENOENT);

	snprintf(afile, sizeof(afile), "%s/afile", dir);
	f = fopen(afile, "w");
	CHECK(f != NULL);
	if (f)
		fclose(f);
	snprintf(path, sizeof(path), "%s/afile/p.pb.gz", dir);
	CHECK_EQ_U64(pprof_builder__write_file(b, path), (uint64_t)-ENOTDIR);

	/* Here the temporary file is written in full and only the rename fails: it must be
	 * removed again. */
	snprintf(path, sizeof(path), "%s/adir", dir);
	CHECK(mkdir(path, 0755) == 0);
	CHECK_EQ_U64(pprof_builder__write_file(b, path), (uint64_t)-EISDIR);
	CHECK_EQ_U64(count_entries(dir, &saw_tmp), 2); /* afile, adir */
	CHECK(!saw_tmp);

	/* Permission checks do not apply to root. */
	if (geteuid() != 0) {
		snprintf(path, sizeof(path), "%s/ro", dir);
		CHECK(mkdir(path, 0555) == 0);
		snprintf(path, sizeof(path), "%s/ro/p.pb.gz", dir);
		CHECK_EQ_U64(pprof_builder__write_file(b, path), (uint64_t)-EACCES);
		snprintf(path, sizeof(path), "%s/ro", dir);
		CHECK_EQ_U64(count_entries(path, &saw_tmp), 0);
	}
	pprof_builder__free(b);
}

/* Renaming over a path replaces whatever entry is there: a symbolic link, a FIFO or a device
 * node would be swapped for a regular file for everyone who uses it (/dev/null). Only a
 * regular file or nothing may be at the path; anything else is left as it was. */
static void test_write_file_leaves_non_regular_files_alone(void)
{
	char dir[768], path[1024], target[1024], link_text[1024];
	struct pprof_builder *b = build_reference_profile();
	struct stat st;
	bool saw_tmp;
	ssize_t n;
	FILE *f;

	CHECK(b != NULL);
	if (!b)
		return;
	snprintf(dir, sizeof(dir), "%s/nonregular", tmp_root);
	CHECK(mkdir(dir, 0755) == 0);
	snprintf(target, sizeof(target), "%s/target", dir);
	f = fopen(target, "w");
	CHECK(f != NULL);
	if (f) {
		fputs("keep", f);
		fclose(f);
	}

	/* A link to a regular file: neither the link nor the file it names changes. */
	snprintf(path, sizeof(path), "%s/link.pb.gz", dir);
	CHECK(symlink(target, path) == 0);
	CHECK_EQ_U64(pprof_builder__write_file(b, path), (uint64_t)-EEXIST);
	CHECK(lstat(path, &st) == 0 && S_ISLNK(st.st_mode));
	n = readlink(path, link_text, sizeof(link_text) - 1);
	CHECK(n > 0);
	link_text[n > 0 ? n : 0] = '\0';
	CHECK_STR(link_text, target);
	CHECK(stat(target, &st) == 0 && st.st_size == 4);

	/* A dangling link: no file is created where it points either. */
	snprintf(path, sizeof(path), "%s/dangling.pb.gz", dir);
	snprintf(link_text, sizeof(link_text), "%s/created-through-link", dir);
	CHECK(symlink(link_text, path) == 0);
	CHECK_EQ_U64(pprof_builder__write_file(b, path), (uint64_t)-EEXIST);
	CHECK(lstat(link_text, &st) != 0 && errno == ENOENT);

	/* A FIFO (a device node behaves the same; creating one needs root). */
	snprintf(path, sizeof(path), "%s/fifo", dir);
	CHECK(mkfifo(path, 0644) == 0);
	CHECK_EQ_U64(pprof_builder__write_file(b, path), (uint64_t)-EEXIST);
	CHECK(lstat(path, &st) == 0 && S_ISFIFO(st.st_mode));

	/* target, link.pb.gz, dangling.pb.gz, fifo: no temporary file left. */
	CHECK_EQ_U64(count_entries(dir, &saw_tmp), 4);
	CHECK(!saw_tmp);
	pprof_builder__free(b);
}

static void test_write_file_replaces_atomically(void)
{
	char dir[768], path[1024], old_content[64];
	struct pprof_builder *b = build_reference_profile();
	struct stat before, after;
	struct pb_buffer raw;
	uint8_t *data = NULL, *plain = NULL;
	size_t len = 0, plain_len = 0;
	mode_t old_umask;
	bool saw_tmp;
	ssize_t n;
	FILE *f;
	int fd;

	CHECK(b != NULL);
	if (!b)
		return;
	snprintf(dir, sizeof(dir), "%s/replace", tmp_root);
	CHECK(mkdir(dir, 0755) == 0);
	snprintf(path, sizeof(path), "%s/p.pb.gz", dir);
	f = fopen(path, "w");
	CHECK(f != NULL);
	if (!f)
		goto out;
	fputs("old profile", f);
	fclose(f);
	/* A reader that opened the old file keeps seeing it whole: the new file is a new
	 * inode renamed over the name, not the old one rewritten in place. */
	fd = open(path, O_RDONLY);
	CHECK(fd >= 0);
	CHECK(stat(path, &before) == 0);

	old_umask = umask(022);
	CHECK_EQ_U64(pprof_builder__write_file(b, path), 0);
	umask(old_umask);

	CHECK(stat(path, &after) == 0);
	CHECK(after.st_ino != before.st_ino);
	CHECK_EQ_U64(after.st_mode & 0777, 0644);
	memset(old_content, 0, sizeof(old_content));
	n = fd >= 0 ? pread(fd, old_content, sizeof(old_content) - 1, 0) : -1;
	CHECK_EQ_U64(n, strlen("old profile"));
	CHECK_STR(old_content, "old profile");
	if (fd >= 0)
		close(fd);
	CHECK_EQ_U64(count_entries(dir, &saw_tmp), 1);
	CHECK(!saw_tmp);

	/* The file is the gzip of exactly what encode() produces, at BestSpeed (the gzip
	 * header's XFL byte is 4 for the fastest level). */
	data = read_file(path, &len);
	CHECK(data != NULL && len > 18);
	if (!data || len <= 18)
		goto out;
	CHECK(data[0] == 0x1f && data[1] == 0x8b && data[2] == 8);
	CHECK_EQ_U64(data[8], 4);
	CHECK_EQ_U64(gunzip(data, len, &plain, &plain_len), 0);
	pb_buffer__init(&raw, 0);
	CHECK_EQ_U64(pprof_builder__encode(b, &raw), 0);
	CHECK_EQ_U64(plain_len, pb_buffer__len(&raw));
	CHECK(plain && plain_len == pb_buffer__len(&raw) &&
	      memcmp(plain, pb_buffer__data(&raw), plain_len) == 0);
	pb_buffer__release(&raw);
out:
	free(plain);
	free(data);
	pprof_builder__free(b);
}

static void test_encode_gzip_in_memory(void)
{
	struct pprof_builder *b = build_reference_profile();
	uint8_t *gz = NULL, *plain = NULL;
	size_t gz_len = 0, plain_len = 0;
	struct pb_buffer raw;

	CHECK(b != NULL);
	if (!b)
		return;
	CHECK_EQ_U64(pprof_builder__encode_gzip(b, &gz, &gz_len), 0);
	CHECK(gz && gz_len > 18 && gz[0] == 0x1f && gz[1] == 0x8b);
	CHECK_EQ_U64(gz ? gunzip(gz, gz_len, &plain, &plain_len) : -1, 0);
	pb_buffer__init(&raw, 0);
	CHECK_EQ_U64(pprof_builder__encode(b, &raw), 0);
	CHECK(plain && plain_len == pb_buffer__len(&raw) &&
	      memcmp(plain, pb_buffer__data(&raw), plain_len) == 0);
	/* Encoding appends and is repeatable: a second encode doubles the buffer exactly. */
	CHECK_EQ_U64(pprof_builder__encode(b, &raw), 0);
	CHECK_EQ_U64(pb_buffer__len(&raw), 2 * plain_len);
	pb_buffer__release(&raw);
	free(plain);
	free(gz);
	pprof_builder__free(b);
}

/* --- 4. interning ------------------------------------------------------------------- */

static void test_interning(void)
{
	struct pprof_mapping m = {.memory_start = 0x1000, .memory_limit = 0x2000};
	struct pprof_builder *b = new_alloc_builder();
	uint64_t f1, f2, f3, f4, l1, l2, l3, l4, map;
	struct pprof_line one[1], two[2];

	CHECK(b != NULL);
	if (!b)
		return;
	map = pprof_builder__add_mapping(b, &m);
	CHECK_EQ_U64(map, 1);
	f1 = pprof_builder__function(b, "alloc_node", "_Z10alloc_nodev", "tree.c", 12);
	f2 = pprof_builder__function(b, "alloc_node", "_Z10alloc_nodev", "tree.c", 12);
	f3 = pprof_builder__function(b, "alloc_node", "_Z10alloc_nodev", "tree.c", 13);
	f4 = pprof_builder__function(b, "alloc_node", NULL, "tree.c", 12);
	CHECK_EQ_U64(f1, 1);
	CHECK_EQ_U64(f2, f1);
	CHECK_EQ_U64(f3, 2);
	CHECK_EQ_U64(f4, 3);
	/* NULL and "" are the same string. */
	CHECK_EQ_U64(pprof_builder__function(b, "alloc_node", "", "tree.c", 12), f4);

	one[0] = (struct pprof_line){f1, 20};
	two[0] = (struct pprof_line){f3, 30};
	two[1] = (struct pprof_line){f4, 40};
	l1 = pprof_builder__location(b, map, 0x1100, one, 1);
	l2 = pprof_builder__location(b, map, 0x1100, two, 2); /* first call's lines win */
	l3 = pprof_builder__location(b, 0, 0x1100, one, 1);   /* another mapping: new */
	l4 = pprof_builder__location(b, map, 0x1104, NULL, 0);
	CHECK_EQ_U64(l1, 1);
	CHECK_EQ_U64(l2, l1);
	CHECK_EQ_U64(l3, 2);
	CHECK_EQ_U64(l4, 3);
	CHECK_EQ_U64(pprof_builder__location(b, map, 0x1104, one, 1), l4);

	CHECK(encode_and_decode(b));
	CHECK_EQ_U64(dec.n_functions, 3);
	CHECK_EQ_U64(dec.n_locations, 3);
	/* "", alloc_objects, count, alloc_space, bytes, space, alloc_node, _Z10alloc_nodev,
	 * tree.c: each once. */
	CHECK_EQ_U64(dec.n_strings, 9);
	pprof_builder__free(b);
}

static void test_many_strings(void)
{
	enum { N = 100000 };
	struct pprof_builder *b = new_alloc_builder();
	char name[64];
	uint64_t id, loc;
	size_t i, bad = 0;

	CHECK(b != NULL);
	if (!b)
		return;
	/* Each function brings two new strings: 200k distinct strings in all. */
	for (i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "function_number_%zu", i);
		id = pprof_builder__function(b, name, NULL, name + 9, 0);
		bad += id != i + 1;
		loc =
		    pprof_builder__location(b, 0, 0x10000 + i * 16, &(struct pprof_line){id, 1}, 1);
		bad += loc != i + 1;
	}
	CHECK_EQ_U64(bad, 0);
	/* Looking everything up again finds the same ids and adds nothing. */
	for (i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "function_number_%zu", i);
		bad += pprof_builder__function(b, name, NULL, name + 9, 0) != i + 1;
		bad += pprof_builder__location(b, 0, 0x10000 + i * 16, NULL, 0) != i + 1;
	}
	CHECK_EQ_U64(bad, 0);
	CHECK(encode_and_decode(b));
	CHECK_EQ_U64(dec.n_strings, 6 + 2 * N);
	CHECK_EQ_U64(dec.n_functions, N);
	CHECK_EQ_U64(dec.last_function_id, N);
	CHECK_EQ_U64(dec.n_locations, N);
	CHECK(decoded_string_is(dec.function_name[N], "function_number_99999"));
	CHECK(decoded_string_is(dec.function_name[1], "function_number_0"));
	pprof_builder__free(b);
}

/* --- 5. UTF-8 ------------------------------------------------------------------------ */

static void test_invalid_utf8_sanitized(void)
{
	static const struct {
		const char *in, *want;
	} cases[] = {
	    {"plain_ascii", "plain_ascii"},
	    {"h\xc3\xa9llo \xe2\x9c\x93 \xf0\x9f\x98\x80",
	     "h\xc3\xa9llo \xe2\x9c\x93 \xf0\x9f\x98\x80"},
	    {"bad\xffname", "bad\xef\xbf\xbdname"},
	    /* A run of invalid bytes becomes one replacement character. */
	    {"run\xff\xfe\xfd.end", "run\xef\xbf\xbd.end"},
	    {"stray\x80", "stray\xef\xbf\xbd"},
	    {"overlong\xc0\xaf", "overlong\xef\xbf\xbd"},
	    {"overlong3\xe0\x80\xaf", "overlong3\xef\xbf\xbd"},
	    {"surrogate\xed\xa0\x80", "surrogate\xef\xbf\xbd"},
	    {"too_big\xf4\x90\x80\x80", "too_big\xef\xbf\xbd"},
	    {"truncated\xe2\x82", "truncated\xef\xbf\xbd"},
	    {"\xe2\x82x", "\xef\xbf\xbdx"},
	    {"max\xf4\x8f\xbf\xbf", "max\xf4\x8f\xbf\xbf"},
	};
	enum { N = sizeof(cases) / sizeof(cases[0]) };
	struct pprof_builder *b = new_alloc_builder();
	struct pprof_label label = {.key = "thread\xff", .str = "name\xc0"};
	uint64_t ids[N], a, c, loc;
	int64_t values[2] = {1, 1};
	size_t i, j;

	CHECK(b != NULL);
	if (!b)
		return;
	for (i = 0; i < N; i++)
		ids[i] = pprof_builder__function(b, cases[i].in, NULL, "f\xff.c", 0);
	/* Interning happens after repair: inputs that repair to the same text share an id. */
	a = pprof_builder__function(b, "same\xfe", NULL, NULL, 0);
	c = pprof_builder__function(b, "same\xef\xbf\xbd", NULL, NULL, 0);
	CHECK(a != 0 && a == c);
	loc = pprof_builder__location(b, 0, 1, &(struct pprof_line){a, 1}, 1);
	CHECK_EQ_U64(pprof_builder__add_sample(b, &loc, 1, values, &label, 1), 0);
	CHECK_EQ_U64(pprof_builder__add_comment(b, "comment\xff"), 0);

	CHECK(encode_and_decode(b));
	for (i = 0; i < N; i++) {
		CHECK(ids[i] > 0 && ids[i] < 100100);
		if (ids[i] == 0 || ids[i] >= 100100)
			continue;
		if (!decoded_string_is(dec.function_name[ids[i]], cases[i].want)) {
			fprintf(stderr, "  case %zu (\"%s\") not repaired as expected\n", i,
				cases[i].want);
			unit_case_failures++;
		}
	}
	/* Every string in the table, labels and comments included, is free of the bad bytes
	 * used above: no 0xff, 0xfe, 0xc0 survives. */
	for (i = 0; i < dec.n_strings; i++) {
		for (j = 0; j < dec.string_lens[i]; j++) {
			uint8_t ch = dec.strings[i][j];

			CHECK(ch != 0xff && ch != 0xfe && ch != 0xc0);
		}
	}
	CHECK(decoded_string_is(2, "count")); /* sanity: the table is where we think */
	{
		bool saw_label = false, saw_comment = false;

		for (i = 0; i < dec.n_strings; i++) {
			saw_label |= decoded_string_is(i, "thread\xef\xbf\xbd");
			saw_comment |= decoded_string_is(i, "comment\xef\xbf\xbd");
		}
		CHECK(saw_label);
		CHECK(saw_comment);
	}
	pprof_builder__free(b);
}

/* --- argument checks and defaults ------------------------------------------------------ */

static void test_invalid_references_refused(void)
{
	struct pprof_builder *b = new_alloc_builder();
	struct pprof_label no_key = {.key = NULL, .str = "x"};
	int64_t values[2] = {1, 2};
	uint64_t f, loc;

	CHECK(b != NULL);
	if (!b)
		return;
	f = pprof_builder__function(b, "f", NULL, NULL, 0);
	errno = 0;
	CHECK_EQ_U64(pprof_builder__location(b, 0, 0x10, &(struct pprof_line){f + 1, 1}, 1), 0);
	CHECK_EQ_U64(errno, EINVAL);
	errno = 0;
	CHECK_EQ_U64(pprof_builder__location(b, 1, 0x10, &(struct pprof_line){f, 1}, 1), 0);
	CHECK_EQ_U64(errno, EINVAL);
	loc = pprof_builder__location(b, 0, 0x10, &(struct pprof_line){f, 1}, 1);
	CHECK_EQ_U64(loc, 1);
	CHECK_EQ_U64(pprof_builder__add_sample(b, (uint64_t[]){2}, 1, values, NULL, 0),
		     (uint64_t)-EINVAL);
	CHECK_EQ_U64(pprof_builder__add_sample(b, (uint64_t[]){0}, 1, values, NULL, 0),
		     (uint64_t)-EINVAL);
	CHECK_EQ_U64(pprof_builder__add_sample(b, &loc, 1, NULL, NULL, 0), (uint64_t)-EINVAL);
	CHECK_EQ_U64(pprof_builder__add_sample(b, &loc, 1, values, &no_key, 1), (uint64_t)-EINVAL);
	CHECK_EQ_U64(pprof_builder__sample_count(b), 0);
	CHECK_EQ_U64(pprof_builder__add_sample(b, &loc, 1, values, NULL, 0), 0);
	CHECK_EQ_U64(pprof_builder__sample_count(b), 1);
	pprof_builder__free(b);

	errno = 0;
	CHECK(pprof_builder__new(alloc_types, 2, space_bytes, 1, "inuse_space") == NULL);
	CHECK_EQ_U64(errno, EINVAL);
	errno = 0;
	CHECK(pprof_builder__new(alloc_types, 0, space_bytes, 1, NULL) == NULL);
	CHECK_EQ_U64(errno, EINVAL);
	pprof_builder__free(NULL);
}

static void test_minimal_profile_fields(void)
{
	struct pprof_value_type none = {NULL, NULL};
	struct pprof_builder *b = pprof_builder__new(alloc_types, 1, none, 0, NULL);

	CHECK(b != NULL);
	if (!b)
		return;
	CHECK(encode_and_decode(b));
	CHECK(dec.n_strings >= 1 && dec.string_lens[0] == 0);
	/* period_type is written even when empty (Parca needs it); no default: absent. */
	CHECK(dec.has_period_type);
	CHECK_EQ_U64(dec.period_type_len, 0);
	CHECK(!dec.has_default_sample_type);
	CHECK_EQ_U64(dec.n_samples, 0);
	pprof_builder__free(b);
}

/* --- out of memory ------------------------------------------------------------------- */

#ifdef OOM_TORTURE
/* Everything a real profile uses, stopping at the first error, which it returns. */
static int oom_scenario(const char *path)
{
	struct pprof_mapping m = {.memory_start = 0x1000,
				  .memory_limit = 0x9000,
				  .filename = "/bin/x",
				  .build_id = "ab12",
				  .has_functions = true};
	struct pprof_label labels[] = {{.key = "thread", .str = "t\xff"},
				       {.key = "bytes", .num = 64, .num_unit = "bytes"}};
	uint64_t map, f1, f2, l1, l2, stack[2];
	int64_t values[2] = {1, 64};
	struct pprof_builder *b;
	struct pb_buffer buf;
	uint8_t *gz = NULL;
	size_t gz_len, i;
	int err;

	b = new_alloc_builder();
	if (!b)
		return -errno;
	err = pprof_builder__add_comment(b, "torture");
	map = pprof_builder__add_mapping(b, &m);
	if (!err && !map)
		err = -errno;
	f1 = err ? 0 : pprof_builder__function(b, "caller\xfe", NULL, "x.c", 1);
	if (!err && !f1)
		err = -errno;
	f2 = err ? 0 : pprof_builder__function(b, "callee", NULL, "x.c", 9);
	if (!err && !f2)
		err = -errno;
	l1 = err ? 0 : pprof_builder__location(b, map, 0x1010, &(struct pprof_line){f1, 2}, 1);
	if (!err && !l1)
		err = -errno;
	l2 = err ? 0 : pprof_builder__location(b, map, 0x1020, &(struct pprof_line){f2, 10}, 1);
	if (!err && !l2)
		err = -errno;
	/* Enough invalid names that the string arrays and hash table grow right after a
	 * repair allocated its copy. */
	for (i = 0; i < 60 && !err; i++) {
		char name[32];

		snprintf(name, sizeof(name), "fn\xff%zu", i);
		if (!pprof_builder__function(b, name, NULL, NULL, 0))
			err = -errno;
	}
	stack[0] = l2;
	stack[1] = l1;
	/* Enough samples that the sample arrays grow more than once. */
	for (i = 0; i < 40 && !err; i++)
		err = pprof_builder__add_sample(b, stack, 2, values, labels, 2);
	if (!err) {
		pb_buffer__init(&buf, 0);
		err = pprof_builder__encode(b, &buf);
		pb_buffer__release(&buf);
	}
	if (!err) {
		err = pprof_builder__encode_gzip(b, &gz, &gz_len);
		free(gz);
	}
	if (!err)
		err = pprof_builder__write_file(b, path);
	pprof_builder__free(b);
	return err;
}

static void test_out_of_memory_everywhere(void)
{
	char dir[768], path[1024];
	long n, live_before;
	bool saw_tmp, done = false;
	struct stat st;
	int err;

	/* Under valgrind (or another preloaded allocator) these hooks are bypassed and the
	 * test would mean nothing: say so rather than pretend. The call goes through a
	 * volatile pointer so the compiler cannot drop the malloc/free pair. */
	void *(*volatile alloc_fn)(size_t) = malloc;
	void *probe;

	live_before = live_blocks;
	probe = alloc_fn(16);
	n = live_blocks - live_before;
	free(probe);
	if (n != 1) {
		fprintf(stderr, "  note: malloc is not the test's own (valgrind?): out-of-memory "
				"test skipped\n");
		return;
	}
	snprintf(dir, sizeof(dir), "%s/oom", tmp_root);
	CHECK(mkdir(dir, 0755) == 0);
	snprintf(path, sizeof(path), "%s/p.pb.gz", dir);
	/* Fail allocation 0, then 1, ... until a run needs fewer allocations than that. */
	for (n = 0; n < 5000 && !done; n++) {
		live_before = live_blocks;
		oom_injected = false;
		oom_countdown = n;
		err = oom_scenario(path);
		oom_countdown = -1;
		if (live_blocks != live_before) {
			fprintf(stderr, "  failing allocation %ld leaks %ld blocks\n", n,
				live_blocks - live_before);
			unit_case_failures++;
		}
		if (!oom_injected) {
			CHECK_EQ_U64(err, 0);
			done = true;
		} else if (err != -ENOMEM) {
			fprintf(stderr, "  failing allocation %ld gave %d, want -ENOMEM\n", n, err);
			unit_case_failures++;
		}
		/* A failed write never leaves a file behind, nor a temporary one. */
		if (oom_injected)
			CHECK(stat(path, &st) != 0);
		CHECK_EQ_U64(count_entries(dir, &saw_tmp), oom_injected ? 0 : 1);
		CHECK(!saw_tmp);
		unlink(path);
		if (unit_case_failures > 20)
			break;
	}
	CHECK(done);
	CHECK(n > 20); /* the scenario does allocate: the hook is really in place */
}
#else
static void test_out_of_memory_everywhere(void)
{
	fprintf(stderr, "  note: out-of-memory test skipped under AddressSanitizer\n");
}
#endif

int main(void)
{
	make_tmp_root();
	if (!tmp_root[0])
		return 1;
	RUN(test_go_pprof_reads_profile);
	RUN(test_protoc_field_facts);
	RUN(test_write_file_failures_leave_nothing);
	RUN(test_write_file_replaces_atomically);
	RUN(test_write_file_leaves_non_regular_files_alone);
	RUN(test_encode_gzip_in_memory);
	RUN(test_interning);
	RUN(test_many_strings);
	RUN(test_invalid_utf8_sanitized);
	RUN(test_invalid_references_refused);
	RUN(test_minimal_profile_fields);
	RUN(test_out_of_memory_everywhere);
	pb_buffer__release(&dec_buf);
	remove_tmp_root();
	return unit_summary("pprof");
}
