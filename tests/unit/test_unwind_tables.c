/* Unit tests for agent/symbolize/unwind_tables.c: the rows built from the machine's glibc
 * (found by dladdr, the library this test runs on) say what its CFI says at known places;
 * placement in real BPF maps (root only) reuses an evicted file's rows only after a grace
 * period. */
#include <bpf/bpf.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "symbolize/unwind_tables.h"
#include "unit.h"

static Elf *open_elf(const char *path, int *fd)
{
	elf_version(EV_CURRENT);
	*fd = open(path, O_RDONLY);
	return *fd < 0 ? NULL : elf_begin(*fd, ELF_C_READ_MMAP, NULL);
}

/* The row covering addr (the last with pc <= addr). */
static const struct unwind_row *row_at(const struct unwind_row *rows, size_t n, uint64_t addr)
{
	const struct unwind_row *found = NULL;

	for (size_t i = 0; i < n && rows[i].pc <= addr; i++)
		found = &rows[i];
	return found;
}

static void libc_rows(void)
{
	Dl_info info;
	struct unwind_row *rows = NULL;
	struct unwind_table_info ti;
	size_t n = 0, i;
	const struct unwind_row *r;
	uint64_t malloc_vaddr;
	Elf *elf;
	int fd;

	CHECK(dladdr((void *)malloc, &info) != 0);
	elf = open_elf(info.dli_fname, &fd);
	CHECK(elf != NULL);
	if (!elf)
		return;
	CHECK_EQ_U64(unwind_table_build(elf, &rows, &n, &ti), 0);
	CHECK(n > 1000);
	CHECK_EQ_U64(ti.rows, n);
	for (i = 1; i < n; i++)
		CHECK(rows[i - 1].pc < rows[i].pc);
	/* At malloc's first instruction the CFA is rsp + 8 (the return address just pushed). */
	malloc_vaddr = (uint64_t)((char *)info.dli_saddr - (char *)info.dli_fbase);
	r = row_at(rows, n, malloc_vaddr);
	CHECK(r != NULL);
	if (r) {
		CHECK_EQ_U64(r->cfa_rule, UNWIND_CFA_RSP);
		CHECK_EQ_U64(r->cfa_offset, 8);
		CHECK_EQ_U64(r->rbp_rule, UNWIND_RBP_SAME);
	}
	/* glibc's .plt has the linkers' CFA expression, __restore_rt the signal-frame mark. */
	CHECK(ti.plt_rows >= 1);
	CHECK(ti.signal_rows >= 1);
	for (i = 0; i < n && rows[i].cfa_rule != UNWIND_CFA_PLT; i++)
		;
	CHECK(i < n);
	if (i < n)
		CHECK(rows[i].rbp_offset == 10 || rows[i].rbp_offset == 11);
	/* Some row saves rbp (a function using it as a callee-saved register). */
	for (i = 0; i < n && rows[i].rbp_rule != UNWIND_RBP_SAVED; i++)
		;
	CHECK(i < n);
	free(rows);
	elf_end(elf);
	close(fd);
}

static void null_elf_is_einval(void)
{
	struct unwind_row *rows = (struct unwind_row *)1;
	size_t n = 1;

	CHECK(unwind_table_build(NULL, &rows, &n, NULL) == -EINVAL);
}

struct placed_file {
	Elf *elf;
	int fd;
	struct stat st;
	struct unwind_row *rows;
	size_t n;
};

static bool placed_open(struct placed_file *f, const char *path)
{
	memset(f, 0, sizeof(*f));
	f->elf = open_elf(path, &f->fd);
	return f->elf && fstat(f->fd, &f->st) == 0 &&
	       unwind_table_build(f->elf, &f->rows, &f->n, NULL) == 0;
}

static void placed_close(struct placed_file *f)
{
	free(f->rows);
	elf_end(f->elf);
	if (f->fd >= 0)
		close(f->fd);
}

static struct unwind_table_mapping placed_mapping(const struct placed_file *f)
{
	struct unwind_table_mapping m = {
		.start = 0x10000000,
		.end = 0x20000000,
		.dev_major = major(f->st.st_dev),
		.dev_minor = minor(f->st.st_dev),
		.inode = f->st.st_ino,
		.elf = f->elf,
	};

	return m;
}

/* Libc's rows and libelf's fill the array exactly; both processes go, and this test's own
 * executable then needs room: libc (least recently released) is evicted, and its rows are
 * handed to the new file only after a grace period (a walk on another CPU may still be reading
 * them), with libelf's rows untouched. */
static void evicted_rows_wait_for_a_grace_period(void)
{
	struct placed_file a, b, c;
	Dl_info info_a, info_b;
	struct unwind_tables *t = NULL;
	struct unwind_tables_stats st;
	struct unwind_table_mapping m;
	int rows_fd = -1, procs_fd = -1, files_fd = -1;
	struct unwind_row *view = MAP_FAILED;
	uint32_t capacity = 0;
	char err[256] = "";

	if (geteuid() != 0) {
		printf("  evicted_rows_wait_for_a_grace_period: skipped (needs root for BPF maps)\n");
		return;
	}
	CHECK(dladdr((void *)malloc, &info_a) != 0);
	CHECK(dladdr((void *)elf_begin, &info_b) != 0);
	CHECK(placed_open(&a, info_a.dli_fname));
	CHECK(placed_open(&b, info_b.dli_fname));
	CHECK(placed_open(&c, "/proc/self/exe"));
	CHECK(c.n > 0 && c.n <= a.n);
	if (!a.n || !b.n || !c.n || c.n > a.n)
		goto out;
	capacity = (uint32_t)(a.n + b.n);
	LIBBPF_OPTS(bpf_map_create_opts, mmapable, .map_flags = BPF_F_MMAPABLE);
	LIBBPF_OPTS(bpf_map_create_opts, no_prealloc, .map_flags = BPF_F_NO_PREALLOC);
	rows_fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "t_rows", 4, sizeof(struct unwind_row),
				 capacity, &mmapable);
	procs_fd = bpf_map_create(BPF_MAP_TYPE_HASH, "t_procs", 4, sizeof(struct unwind_proc), 16,
				  &no_prealloc);
	files_fd = bpf_map_create(BPF_MAP_TYPE_HASH, "t_files", sizeof(struct unwind_file_key),
				  sizeof(struct unwind_file_entry), 16, &no_prealloc);
	CHECK(rows_fd >= 0 && procs_fd >= 0 && files_fd >= 0);
	if (rows_fd < 0 || procs_fd < 0 || files_fd < 0)
		goto out;
	CHECK_EQ_U64(unwind_tables__new(rows_fd, procs_fd, files_fd, capacity, &t, err,
					sizeof(err)), 0);
	if (!t)
		goto out;
	view = mmap(NULL, ((size_t)capacity * sizeof(struct unwind_row) + 4095) & ~(size_t)4095,
		    PROT_READ, MAP_SHARED, rows_fd, 0);
	CHECK(view != MAP_FAILED);
	if (view == MAP_FAILED)
		goto out;

	m = placed_mapping(&a);
	CHECK_EQ_U64(unwind_tables__set_process(t, 100, &m, 1), 0);
	m = placed_mapping(&b);
	CHECK_EQ_U64(unwind_tables__set_process(t, 101, &m, 1), 0);
	unwind_tables__stats(t, &st);
	CHECK_EQ_U64(st.rows_used, capacity);
	CHECK_EQ_U64(st.grace_periods, 0);
	CHECK(memcmp(view, a.rows, a.n * sizeof(*view)) == 0);
	CHECK(memcmp(view + a.n, b.rows, b.n * sizeof(*view)) == 0);
	unwind_tables__remove_process(t, 100);
	unwind_tables__remove_process(t, 101);

	CHECK_EQ_U64(unwind_tables__add_file(t, c.elf, major(c.st.st_dev), minor(c.st.st_dev),
					     c.st.st_ino), 0);
	unwind_tables__stats(t, &st);
	CHECK_EQ_U64(st.grace_periods, 1);
	CHECK_EQ_U64(st.rows_quarantined, 0);
	CHECK_EQ_U64(st.files, 2);
	CHECK_EQ_U64(st.rows_used, b.n + c.n);
	CHECK(memcmp(view, c.rows, c.n * sizeof(*view)) == 0);
	CHECK(memcmp(view + a.n, b.rows, b.n * sizeof(*view)) == 0);
out:
	if (view != MAP_FAILED)
		munmap(view, ((size_t)capacity * sizeof(struct unwind_row) + 4095) & ~(size_t)4095);
	unwind_tables__free(t);
	if (rows_fd >= 0)
		close(rows_fd);
	if (procs_fd >= 0)
		close(procs_fd);
	if (files_fd >= 0)
		close(files_fd);
	placed_close(&a);
	placed_close(&b);
	placed_close(&c);
}

int main(void)
{
	RUN(libc_rows);
	RUN(null_elf_is_einval);
	RUN(evicted_rows_wait_for_a_grace_period);
	return unit_summary("unwind_tables");
}
