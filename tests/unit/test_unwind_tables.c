/* Unit tests for agent/symbolize/unwind_tables.c: the rows built from the machine's glibc
 * (found by dladdr, the library this test runs on) say what its CFI says at known places. */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
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

int main(void)
{
	RUN(libc_rows);
	RUN(null_elf_is_einval);
	return unit_summary("unwind_tables");
}
