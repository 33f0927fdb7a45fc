/* Building and placing the in-kernel unwinder's tables (see unwind_tables.h).
 *
 * Rows come from libdw's CFI interpreter rather than a hand-written .eh_frame parser: for each
 * FDE start (the sorted table of .eh_frame_hdr, else the file's function symbols) the row at
 * that pc is asked for, and dwarf_frame_info says where it ends, so the next row is asked for
 * there, to the end of the FDE. Each row is reduced to what the BPF walk evaluates: the CFA
 * from rsp or rbp (libdw reports a register rule as one DW_OP_bregx), the linkers' PLT
 * expression, a signal frame (the 'S' augmentation of __restore_rt), or an undefined return
 * address (the outermost frame); anything else is marked unsupported, which stops a walk.
 * Equal neighbours merge; gaps between FDEs get a NONE row.
 *
 * Placement: the array is one address space of rows, handed out first-fit from a sorted list
 * of free extents; a file keeps its extent while any process maps it and afterwards until the
 * space is needed (least recently used first).
 *
 * An evicted file's extent is quarantined, not freed: a walk running on another CPU may have
 * found the file (in a process's list or unwind_files) just before its entries went and still
 * read its rows. Quarantined extents become free only after a grace period, when every BPF
 * program that was running has returned: updating an element of a map-in-map waits for that
 * (the kernel's maybe_wait_bpf_programs calls synchronize_rcu, and uprobe programs run under
 * rcu_read_lock), so the tables own a one-slot array of maps for nothing else. The wait (some
 * ms) is taken only when a file's rows would not fit otherwise, once for all quarantined
 * extents. Without that map the quarantine is never lifted: such files get no table. */
#include "symbolize/unwind_tables.h"

#include <bpf/bpf.h>
#include <dwarf.h>
#include <elfutils/libdw.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* x86-64 DWARF register numbers. */
#define DWARF_REG_RBP 6
#define DWARF_REG_RSP 7
#define DWARF_REG_RA 16

/* A row and the range it covers, before merging. */
struct cfi_range {
	uint64_t start, end;
	uint32_t source; /* 0 .eh_frame, 1 .debug_frame: .eh_frame wins an overlap */
	struct unwind_row row;
};

struct range_list {
	struct cfi_range *items;
	size_t n, cap;
};

static int range_push(struct range_list *l, const struct cfi_range *r)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 1024;
		struct cfi_range *items = realloc(l->items, cap * sizeof(*items));

		if (!items)
			return -ENOMEM;
		l->items = items;
		l->cap = cap;
	}
	l->items[l->n++] = *r;
	return 0;
}

/* The linkers' PLT rule: DW_OP_breg7 (rsp) N; DW_OP_breg16 (rip) 0; DW_OP_lit15; DW_OP_and;
 * DW_OP_litK; DW_OP_ge; DW_OP_lit3; DW_OP_shl; DW_OP_plus: CFA = rsp + N, + 8 once the entry
 * has pushed its index ((rip & 15) >= K). */
static bool is_plt_rule(const Dwarf_Op *ops, size_t n, int32_t *offset, int16_t *threshold)
{
	if (n != 9 || ops[0].atom != DW_OP_breg7 || ops[1].atom != DW_OP_breg16 ||
	    ops[1].number != 0 || ops[2].atom != DW_OP_lit15 || ops[3].atom != DW_OP_and ||
	    ops[4].atom < DW_OP_lit0 || ops[4].atom > DW_OP_lit31 || ops[5].atom != DW_OP_ge ||
	    ops[6].atom != DW_OP_lit3 || ops[7].atom != DW_OP_shl || ops[8].atom != DW_OP_plus)
		return false;
	*offset = (int32_t)(int64_t)ops[0].number;
	*threshold = (int16_t)(ops[4].atom - DW_OP_lit0);
	return true;
}

/* A register saved at CFA + offset: libdw says DW_OP_call_frame_cfa [DW_OP_plus_uconst off]. */
static bool saved_at_cfa(const Dwarf_Op *ops, size_t n, int64_t *offset)
{
	if (!ops || n < 1 || n > 2 || ops[0].atom != DW_OP_call_frame_cfa)
		return false;
	if (n == 1) {
		*offset = 0;
		return true;
	}
	if (ops[1].atom != DW_OP_plus_uconst)
		return false;
	*offset = (int64_t)ops[1].number;
	return true;
}

static void frame_to_row(Dwarf_Frame *frame, bool signal, struct unwind_row *row,
			 struct unwind_table_info *info)
{
	Dwarf_Op mem[3], *ops = NULL;
	size_t n = 0;
	int64_t offset;

	memset(row, 0, sizeof(*row));
	row->rbp_rule = UNWIND_RBP_UNKNOWN;
	if (signal) {
		row->cfa_rule = UNWIND_CFA_SIGNAL;
		info->signal_rows++;
		return;
	}
	/* The return address first: undefined marks the outermost frame (_start, clone). */
	if (dwarf_frame_register(frame, DWARF_REG_RA, mem, &ops, &n) != 0)
		goto unsupported;
	if (n == 0) {
		/* libdw 0.188 gives no ops for undefined and same-value alike; a return address
		 * that is "the callee's" means nothing, so both end the walk. */
		row->cfa_rule = UNWIND_CFA_END;
		return;
	}
	if (!saved_at_cfa(ops, n, &offset) || offset != -8)
		goto unsupported;

	if (dwarf_frame_cfa(frame, &ops, &n) != 0)
		goto unsupported;
	if (n == 1 && ops[0].atom == DW_OP_bregx &&
	    (ops[0].number == DWARF_REG_RSP || ops[0].number == DWARF_REG_RBP) &&
	    (int64_t)ops[0].number2 >= INT32_MIN && (int64_t)ops[0].number2 <= INT32_MAX) {
		row->cfa_rule = ops[0].number == DWARF_REG_RSP ? UNWIND_CFA_RSP : UNWIND_CFA_RBP;
		row->cfa_offset = (int32_t)(int64_t)ops[0].number2;
	} else if (is_plt_rule(ops, n, &row->cfa_offset, &row->rbp_offset)) {
		row->cfa_rule = UNWIND_CFA_PLT;
		info->plt_rows++;
		return; /* a PLT entry leaves rbp alone; rbp_offset holds the threshold */
	} else {
		goto unsupported;
	}

	ops = NULL;
	n = 0;
	if (dwarf_frame_register(frame, DWARF_REG_RBP, mem, &ops, &n) == 0) {
		/* Without an ABI description (no Dwfl) libdw reports rbp's unspecified rule as
		 * undefined; rbp is callee-saved, so unspecified means unchanged. */
		if (n == 0)
			row->rbp_rule = UNWIND_RBP_SAME;
		else if (saved_at_cfa(ops, n, &offset) && offset >= INT16_MIN &&
			 offset <= INT16_MAX) {
			row->rbp_rule = UNWIND_RBP_SAVED;
			row->rbp_offset = (int16_t)offset;
		}
	}
	return;
unsupported:
	memset(row, 0, sizeof(*row));
	row->cfa_rule = UNWIND_CFA_UNSUPPORTED;
	row->rbp_rule = UNWIND_RBP_UNKNOWN;
	info->unsupported++;
}

/* The rows of the CFI covering [seed, limit), from seed on. *covered is where they ended. */
static int walk_fde(Dwarf_CFI *cfi, uint64_t seed, uint64_t limit, uint32_t source,
		    struct range_list *out, struct unwind_table_info *info, uint64_t *covered)
{
	uint64_t pc = seed;
	bool any = false;
	int ret;

	*covered = seed;
	while (pc < limit) {
		Dwarf_Frame *frame;
		Dwarf_Addr start, end;
		bool signal = false;
		struct cfi_range r = { .source = source };

		if (dwarf_cfi_addrframe(cfi, pc, &frame) != 0)
			break;
		if (dwarf_frame_info(frame, &start, &end, &signal) < 0 || end <= pc) {
			free(frame);
			break;
		}
		frame_to_row(frame, signal, &r.row, info);
		free(frame);
		r.start = start > pc ? start : pc;
		r.end = end;
		ret = range_push(out, &r);
		if (ret)
			return ret;
		any = true;
		pc = end;
		*covered = end;
	}
	if (any)
		info->fdes++;
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static int cmp_range(const void *a, const void *b)
{
	const struct cfi_range *x = a, *y = b;

	if (x->start != y->start)
		return x->start < y->start ? -1 : 1;
	return (int)x->source - (int)y->source;
}

static Elf_Scn *find_section(Elf *elf, const char *name, GElf_Shdr *shdr)
{
	size_t shstrndx;
	Elf_Scn *scn = NULL;

	if (elf_getshdrstrndx(elf, &shstrndx) != 0)
		return NULL;
	while ((scn = elf_nextscn(elf, scn))) {
		const char *n;

		if (!gelf_getshdr(scn, shdr))
			continue;
		n = elf_strptr(elf, shstrndx, shdr->sh_name);
		if (n && strcmp(n, name) == 0)
			return scn;
	}
	return NULL;
}

struct seed_list {
	uint64_t *pcs;
	size_t n, cap;
};

static int seed_push(struct seed_list *s, uint64_t pc)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 1024;
		uint64_t *pcs = realloc(s->pcs, cap * sizeof(*pcs));

		if (!pcs)
			return -ENOMEM;
		s->pcs = pcs;
		s->cap = cap;
	}
	s->pcs[s->n++] = pc;
	return 0;
}

/* FDE starts from .eh_frame_hdr's sorted table, in the encoding every linker writes
 * (pcrel|sdata4 pointer, udata4 count, datarel|sdata4 table); false for anything else. */
static bool seeds_from_eh_frame_hdr(Elf *elf, struct seed_list *seeds, int *err)
{
	GElf_Shdr shdr;
	Elf_Scn *scn = find_section(elf, ".eh_frame_hdr", &shdr);
	Elf_Data *data;
	const uint8_t *p;
	uint32_t count;
	size_t i;

	*err = 0;
	if (!scn || !(data = elf_getdata(scn, NULL)) || !data->d_buf || data->d_size < 12)
		return false;
	p = data->d_buf;
	if (p[0] != 1 || p[1] != 0x1b || p[2] != 0x03 || p[3] != 0x3b)
		return false;
	memcpy(&count, p + 8, sizeof(count));
	if ((data->d_size - 12) / 8 < count)
		return false;
	for (i = 0; i < count; i++) {
		int32_t loc;

		memcpy(&loc, p + 12 + i * 8, sizeof(loc));
		*err = seed_push(seeds, shdr.sh_addr + (int64_t)loc);
		if (*err)
			return false;
	}
	return true;
}

/* Function symbols: where .debug_frame (which has no index) or a file without .eh_frame_hdr
 * has FDEs. */
static int seeds_from_symbols(Elf *elf, struct seed_list *seeds)
{
	Elf_Scn *scn = NULL;
	GElf_Shdr shdr;

	while ((scn = elf_nextscn(elf, scn))) {
		Elf_Data *data;
		size_t i, n;

		if (!gelf_getshdr(scn, &shdr) ||
		    (shdr.sh_type != SHT_SYMTAB && shdr.sh_type != SHT_DYNSYM) ||
		    !shdr.sh_entsize)
			continue;
		data = elf_getdata(scn, NULL);
		if (!data)
			continue;
		n = shdr.sh_size / shdr.sh_entsize;
		for (i = 0; i < n; i++) {
			GElf_Sym sym;

			if (!gelf_getsym(data, (int)i, &sym) || GELF_ST_TYPE(sym.st_info) != STT_FUNC ||
			    sym.st_shndx == SHN_UNDEF || !sym.st_value)
				continue;
			if (seed_push(seeds, sym.st_value))
				return -ENOMEM;
		}
	}
	return 0;
}

static int rows_from_cfi(Dwarf_CFI *cfi, uint32_t source, struct seed_list *seeds,
			 struct range_list *ranges, struct unwind_table_info *info)
{
	uint64_t covered = 0;
	size_t i;
	int ret;

	qsort(seeds->pcs, seeds->n, sizeof(*seeds->pcs), cmp_u64);
	for (i = 0; i < seeds->n; i++) {
		uint64_t seed = seeds->pcs[i], limit = UINT64_MAX, end;

		if (seed < covered)
			continue; /* inside the FDE just walked */
		if (i + 1 < seeds->n && seeds->pcs[i + 1] > seed)
			limit = seeds->pcs[i + 1];
		ret = walk_fde(cfi, seed, limit, source, ranges, info, &end);
		if (ret)
			return ret;
		covered = end;
	}
	return 0;
}

static bool same_rule(const struct unwind_row *a, const struct unwind_row *b)
{
	return a->cfa_rule == b->cfa_rule && a->cfa_offset == b->cfa_offset &&
	       a->rbp_rule == b->rbp_rule && a->rbp_offset == b->rbp_offset;
}

/* Sorted, possibly overlapping ranges -> rows, NONE in the gaps, equal neighbours merged. */
static int ranges_to_rows(struct range_list *l, struct unwind_row **rows, size_t *n_rows)
{
	struct unwind_row *out;
	uint64_t end = 0;
	size_t i, n = 0;

	qsort(l->items, l->n, sizeof(*l->items), cmp_range);
	out = calloc(2 * l->n + 1, sizeof(*out));
	if (!out)
		return -ENOMEM;
	for (i = 0; i < l->n; i++) {
		struct cfi_range *r = &l->items[i];
		uint64_t start = r->start;

		if (r->end <= end)
			continue;
		if (start < end)
			start = end;
		if (start > UINT32_MAX || r->end > (uint64_t)UINT32_MAX + 1) {
			free(out);
			return -ERANGE;
		}
		if (n && start > end) {
			/* A gap: no CFI from the previous range's end. */
			out[n] = (struct unwind_row){ .pc = (uint32_t)end,
						      .cfa_rule = UNWIND_CFA_NONE,
						      .rbp_rule = UNWIND_RBP_UNKNOWN };
			n++;
		}
		if (!(n && start == end && same_rule(&out[n - 1], &r->row))) {
			out[n] = r->row;
			out[n].pc = (uint32_t)start;
			n++;
		}
		end = r->end;
	}
	if (n && end <= UINT32_MAX) {
		out[n] = (struct unwind_row){ .pc = (uint32_t)end, .cfa_rule = UNWIND_CFA_NONE,
					      .rbp_rule = UNWIND_RBP_UNKNOWN };
		n++;
	}
	*rows = out;
	*n_rows = n;
	return 0;
}

int unwind_table_build(Elf *elf, struct unwind_row **rows, size_t *n_rows,
		       struct unwind_table_info *info)
{
	struct unwind_table_info local;
	struct seed_list seeds = { 0 };
	struct range_list ranges = { 0 };
	Dwarf_CFI *cfi;
	Dwarf *dwarf = NULL;
	GElf_Shdr shdr;
	bool symbols_read = false;
	int ret = 0;

	if (!elf || !rows || !n_rows)
		return -EINVAL;
	*rows = NULL;
	*n_rows = 0;
	if (!info)
		info = &local;
	memset(info, 0, sizeof(*info));

	cfi = dwarf_getcfi_elf(elf);
	if (cfi) {
		if (!seeds_from_eh_frame_hdr(elf, &seeds, &ret)) {
			if (ret)
				goto out;
			ret = seeds_from_symbols(elf, &seeds);
			symbols_read = true;
			if (ret)
				goto out;
		}
		ret = rows_from_cfi(cfi, 0, &seeds, &ranges, info);
		if (ret)
			goto out;
	}
	/* .debug_frame in the file itself (some hand-written or -fno-asynchronous-unwind-tables
	 * code has only that); separate debug files are left to the user-space fallback. */
	if (find_section(elf, ".debug_frame", &shdr)) {
		dwarf = dwarf_begin_elf(elf, DWARF_C_READ, NULL);
		cfi = dwarf ? dwarf_getcfi(dwarf) : NULL;
		if (cfi) {
			if (!symbols_read) {
				seeds.n = 0;
				ret = seeds_from_symbols(elf, &seeds);
				if (ret)
					goto out;
			}
			ret = rows_from_cfi(cfi, 1, &seeds, &ranges, info);
			if (ret)
				goto out;
		}
	}
	if (!ranges.n) {
		ret = -ENOENT;
		goto out;
	}
	ret = ranges_to_rows(&ranges, rows, n_rows);
	info->rows = *n_rows;
out:
	if (dwarf)
		dwarf_end(dwarf);
	free(seeds.pcs);
	free(ranges.items);
	return ret;
}

/* ---- placement ------------------------------------------------------------------------ */

struct table_file {
	uint32_t dev_major, dev_minor;
	uint64_t inode;
	bool failed;       /* no table could be built: not tried again */
	bool in_files_map; /* has an entry in unwind_files (its code segment is known) */
	uint32_t first, count;
	size_t users;      /* processes mapping it */
	uint64_t last_used; /* tick of its last release */
};

struct extent {
	uint32_t first, count;
};

struct table_proc {
	pid_t pid;
	size_t *files; /* indexes into t->files, one per mapping with a table */
	size_t n_files;
};

struct unwind_tables {
	int rows_fd, procs_fd, files_fd;
	int grace_fd, grace_inner_fd; /* the one-slot array of maps; -1 without one */
	struct unwind_row *rows; /* the mmapped array */
	size_t map_bytes;
	uint32_t max_rows;
	struct extent *free_list; /* sorted, coalesced */
	size_t n_free;
	struct extent *quarantine; /* evicted, reusable after a grace period; unsorted */
	size_t n_quarantine, cap_quarantine;
	struct table_file *files;
	size_t n_files, cap_files;
	struct table_proc *procs;
	size_t n_procs, cap_procs;
	uint64_t tick;
	struct unwind_tables_stats stats;
	struct unwind_proc *scratch; /* the value written to the procs map */
};

int unwind_tables__new(int rows_fd, int procs_fd, int files_fd, uint32_t max_rows,
		       struct unwind_tables **out, char *err, size_t err_len)
{
	struct unwind_tables *t;
	int ret;

	*out = NULL;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->rows_fd = rows_fd;
	t->grace_fd = -1;
	t->grace_inner_fd = -1;
	t->procs_fd = procs_fd;
	t->files_fd = files_fd;
	t->max_rows = max_rows;
	t->map_bytes = ((size_t)max_rows * sizeof(struct unwind_row) + 4095) & ~(size_t)4095;
	t->rows = mmap(NULL, t->map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, rows_fd, 0);
	if (t->rows == MAP_FAILED) {
		ret = -errno;
		snprintf(err, err_len,
			 "cannot map the unwind table array (%s): the kernel must allow "
			 "mmap of BPF arrays (Linux 5.5+); use --unwind dwarf",
			 strerror(-ret));
		free(t);
		return ret;
	}
	t->free_list = malloc(sizeof(*t->free_list));
	t->scratch = calloc(1, sizeof(*t->scratch));
	if (!t->free_list || !t->scratch) {
		unwind_tables__free(t);
		return -ENOMEM;
	}
	t->free_list[0] = (struct extent){ 0, max_rows };
	t->n_free = 1;
	t->grace_inner_fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "unwind_grace_in", 4, 4, 1, NULL);
	if (t->grace_inner_fd >= 0) {
		LIBBPF_OPTS(bpf_map_create_opts, opts, .inner_map_fd = t->grace_inner_fd);

		t->grace_fd = bpf_map_create(BPF_MAP_TYPE_ARRAY_OF_MAPS, "unwind_grace", 4, 4, 1,
					     &opts);
	}
	t->stats.rows_capacity = max_rows;
	*out = t;
	return 0;
}

void unwind_tables__free(struct unwind_tables *t)
{
	size_t i;

	if (!t)
		return;
	if (t->rows && t->rows != MAP_FAILED)
		munmap(t->rows, t->map_bytes);
	for (i = 0; i < t->n_procs; i++)
		free(t->procs[i].files);
	free(t->procs);
	free(t->files);
	free(t->free_list);
	free(t->quarantine);
	free(t->scratch);
	if (t->grace_fd >= 0)
		close(t->grace_fd);
	if (t->grace_inner_fd >= 0)
		close(t->grace_inner_fd);
	free(t);
}

/* First fit; UINT32_MAX when nothing fits. */
static uint32_t extent_alloc(struct unwind_tables *t, uint32_t count)
{
	size_t i;

	for (i = 0; i < t->n_free; i++) {
		struct extent *e = &t->free_list[i];
		uint32_t first = e->first;

		if (e->count < count)
			continue;
		e->first += count;
		e->count -= count;
		if (!e->count) {
			memmove(e, e + 1, (t->n_free - i - 1) * sizeof(*e));
			t->n_free--;
		}
		return first;
	}
	return UINT32_MAX;
}

/* Inserts [first, first + count) into a sorted, coalesced list of *n extents. */
static int extent_insert(struct extent **listp, size_t *n, uint32_t first, uint32_t count)
{
	size_t i = 0;
	struct extent *list;

	while (i < *n && (*listp)[i].first < first)
		i++;
	list = realloc(*listp, (*n + 1) * sizeof(*list));
	if (!list)
		return -ENOMEM;
	*listp = list;
	memmove(&list[i + 1], &list[i], (*n - i) * sizeof(*list));
	list[i] = (struct extent){ first, count };
	(*n)++;
	/* Coalesce with the next, then the previous. */
	if (i + 1 < *n && list[i].first + list[i].count == list[i + 1].first) {
		list[i].count += list[i + 1].count;
		memmove(&list[i + 1], &list[i + 2], (*n - i - 2) * sizeof(*list));
		(*n)--;
	}
	if (i > 0 && list[i - 1].first + list[i - 1].count == list[i].first) {
		list[i - 1].count += list[i].count;
		memmove(&list[i], &list[i + 1], (*n - i - 1) * sizeof(*list));
		(*n)--;
	}
	return 0;
}

static int extent_quarantine(struct unwind_tables *t, uint32_t first, uint32_t count)
{
	if (t->n_quarantine == t->cap_quarantine) {
		size_t cap = t->cap_quarantine ? t->cap_quarantine * 2 : 16;
		struct extent *q = realloc(t->quarantine, cap * sizeof(*q));

		if (!q)
			return -ENOMEM;
		t->quarantine = q;
		t->cap_quarantine = cap;
	}
	t->quarantine[t->n_quarantine++] = (struct extent){ first, count };
	t->stats.rows_quarantined += count;
	return 0;
}

/* Whether count rows would fit once the quarantine is lifted. */
static bool fits_after_grace(const struct unwind_tables *t, uint32_t count)
{
	struct extent *merged = malloc((t->n_free ? t->n_free : 1) * sizeof(*merged));
	size_t n = t->n_free, i;
	bool fits = false;

	if (!merged)
		return false;
	memcpy(merged, t->free_list, n * sizeof(*merged));
	for (i = 0; i < t->n_quarantine; i++) {
		if (extent_insert(&merged, &n, t->quarantine[i].first, t->quarantine[i].count)) {
			free(merged);
			return false;
		}
	}
	for (i = 0; i < n && !fits; i++)
		fits = merged[i].count >= count;
	free(merged);
	return fits;
}

/* Waits until no BPF program that might have read a quarantined extent's rows still runs,
 * then frees those extents. -errno when the wait cannot be had (the quarantine stays). */
static int lift_quarantine(struct unwind_tables *t)
{
	uint32_t zero = 0;
	size_t i;

	if (t->grace_fd < 0)
		return -EOPNOTSUPP;
	/* Returns once every BPF program that was running has returned (synchronize_rcu). */
	if (bpf_map_update_elem(t->grace_fd, &zero, &t->grace_inner_fd, BPF_ANY) != 0)
		return -errno;
	t->stats.grace_periods++;
	for (i = 0; i < t->n_quarantine; i++) {
		if (extent_insert(&t->free_list, &t->n_free, t->quarantine[i].first,
				  t->quarantine[i].count))
			break;
		t->stats.rows_quarantined -= t->quarantine[i].count;
	}
	memmove(t->quarantine, t->quarantine + i, (t->n_quarantine - i) * sizeof(*t->quarantine));
	t->n_quarantine -= i;
	return t->n_quarantine ? -ENOMEM : 0;
}

/* The unwind_files key of a file: the kernel's dev_t encoding (MKDEV) of what /proc/PID/maps
 * and stat show as major:minor. */
static struct unwind_file_key file_key(const struct table_file *f)
{
	struct unwind_file_key key = {
		.dev = ((uint64_t)f->dev_major << 20) | f->dev_minor,
		.inode = f->inode,
	};

	return key;
}

/* Describes elf's code segment for the kernel's lookup by file (struct unwind_file_entry).
 * false when it has none, or several that disagree on vaddr - offset (its mappings then have
 * different biases, which one entry cannot say). */
static bool code_segment(Elf *elf, struct unwind_file_entry *entry)
{
	size_t i, n;
	bool found = false;

	if (elf_getphdrnum(elf, &n) != 0)
		return false;
	for (i = 0; i < n; i++) {
		GElf_Phdr ph;

		if (!gelf_getphdr(elf, (int)i, &ph) || ph.p_type != PT_LOAD || !(ph.p_flags & PF_X))
			continue;
		if (found && entry->code_delta != ph.p_vaddr - ph.p_offset)
			return false;
		if (!found || ph.p_vaddr < entry->code_start)
			entry->code_start = ph.p_vaddr;
		if (!found || ph.p_vaddr + ph.p_memsz > entry->code_end)
			entry->code_end = ph.p_vaddr + ph.p_memsz;
		entry->code_delta = ph.p_vaddr - ph.p_offset;
		found = true;
	}
	return found;
}

/* Frees the rows of the least recently released unused file. false when there is none. */
static bool evict_one(struct unwind_tables *t)
{
	struct table_file *victim = NULL;
	size_t i;

	for (i = 0; i < t->n_files; i++) {
		struct table_file *f = &t->files[i];

		if (f->users || f->failed || !f->count)
			continue;
		if (!victim || f->last_used < victim->last_used)
			victim = f;
	}
	if (!victim || extent_quarantine(t, victim->first, victim->count) != 0)
		return false;
	if (victim->in_files_map) {
		struct unwind_file_key key = file_key(victim);

		bpf_map_delete_elem(t->files_fd, &key);
		victim->in_files_map = false;
	}
	t->stats.rows_used -= victim->count;
	t->stats.files--;
	victim->count = 0;
	victim->first = 0;
	return true;
}

/* The file's index, its rows built and placed if they were not; -ENOMEM. A file that gets no
 * table is remembered as failed (count 0). */
static int file_get(struct unwind_tables *t, const struct unwind_table_mapping *m, size_t *index)
{
	struct table_file *f = NULL;
	struct unwind_row *rows;
	size_t i, n_rows;
	struct timespec a, b;
	uint32_t first;
	int ret;

	for (i = 0; i < t->n_files; i++) {
		if (t->files[i].inode == m->inode && t->files[i].dev_major == m->dev_major &&
		    t->files[i].dev_minor == m->dev_minor) {
			f = &t->files[i];
			break;
		}
	}
	if (!f) {
		if (t->n_files == t->cap_files) {
			size_t cap = t->cap_files ? t->cap_files * 2 : 64;
			struct table_file *files = realloc(t->files, cap * sizeof(*files));

			if (!files)
				return -ENOMEM;
			t->files = files;
			t->cap_files = cap;
		}
		f = &t->files[t->n_files];
		memset(f, 0, sizeof(*f));
		f->dev_major = m->dev_major;
		f->dev_minor = m->dev_minor;
		f->inode = m->inode;
		i = t->n_files++;
	}
	*index = i;
	if (f->count || f->failed || !m->elf)
		return 0;

	clock_gettime(CLOCK_MONOTONIC, &a);
	ret = unwind_table_build(m->elf, &rows, &n_rows, NULL);
	clock_gettime(CLOCK_MONOTONIC, &b);
	t->stats.build_ns += (uint64_t)(b.tv_sec - a.tv_sec) * 1000000000ull +
			     (uint64_t)(b.tv_nsec - a.tv_nsec);
	if (ret == -ENOMEM)
		return ret;
	if (ret || !n_rows || n_rows > t->max_rows) {
		free(ret ? NULL : rows);
		f->failed = true;
		t->stats.files_failed++;
		return 0;
	}
	while ((first = extent_alloc(t, (uint32_t)n_rows)) == UINT32_MAX) {
		if (t->n_quarantine && fits_after_grace(t, (uint32_t)n_rows) &&
		    lift_quarantine(t) == 0)
			continue;
		if (!evict_one(t)) {
			free(rows);
			f->failed = true;
			t->stats.files_failed++;
			return 0;
		}
	}
	memcpy(&t->rows[first], rows, n_rows * sizeof(*rows));
	free(rows);
	f->first = first;
	f->count = (uint32_t)n_rows;
	/* Walks find the file by its identity too: a mapping the process's list does not hold
	 * yet still gets this table. A full map only loses that shortcut. */
	struct unwind_file_entry entry = { .row_first = first, .row_count = (uint32_t)n_rows };
	struct unwind_file_key key = file_key(f);

	if (code_segment(m->elf, &entry) &&
	    bpf_map_update_elem(t->files_fd, &key, &entry, BPF_ANY) == 0)
		f->in_files_map = true;
	t->stats.rows_used += n_rows;
	t->stats.files++;
	return 0;
}

static struct table_proc *proc_find(struct unwind_tables *t, pid_t pid)
{
	size_t i;

	for (i = 0; i < t->n_procs; i++) {
		if (t->procs[i].pid == pid)
			return &t->procs[i];
	}
	return NULL;
}

static void proc_release_files(struct unwind_tables *t, struct table_proc *p)
{
	size_t i;

	for (i = 0; i < p->n_files; i++) {
		struct table_file *f = &t->files[p->files[i]];

		f->users--;
		f->last_used = ++t->tick;
	}
	free(p->files);
	p->files = NULL;
	p->n_files = 0;
}

static int cmp_mapping(const void *a, const void *b)
{
	const struct unwind_mapping *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

int unwind_tables__set_process(struct unwind_tables *t, pid_t pid,
			       const struct unwind_table_mapping *mappings, size_t n)
{
	struct unwind_proc *value = t->scratch;
	struct table_proc *p;
	size_t *files, i, n_files = 0;
	int ret = 0;

	if (!t || pid <= 0 || (!mappings && n))
		return -EINVAL;
	files = calloc(n ? n : 1, sizeof(*files));
	if (!files)
		return -ENOMEM;
	memset(value, 0, sizeof(*value));
	for (i = 0; i < n && value->n_mappings < UNWIND_MAX_MAPPINGS; i++) {
		const struct unwind_table_mapping *m = &mappings[i];
		struct unwind_mapping *out = &value->mappings[value->n_mappings++];
		struct table_file *f;
		size_t index;

		ret = file_get(t, m, &index);
		if (ret) {
			free(files);
			return ret;
		}
		f = &t->files[index];
		f->users++;
		files[n_files++] = index;
		out->start = m->start;
		out->end = m->end;
		out->bias = m->bias;
		out->row_first = f->count ? f->first : 0;
		out->row_count = f->count;
	}
	qsort(value->mappings, value->n_mappings, sizeof(value->mappings[0]), cmp_mapping);
	if (bpf_map_update_elem(t->procs_fd, &pid, value, BPF_ANY) != 0)
		ret = -errno;

	p = proc_find(t, pid);
	if (!p) {
		if (t->n_procs == t->cap_procs) {
			size_t cap = t->cap_procs ? t->cap_procs * 2 : 16;
			struct table_proc *procs = realloc(t->procs, cap * sizeof(*procs));

			if (!procs) {
				/* Undo the uses taken above. */
				for (i = 0; i < n_files; i++)
					t->files[files[i]].users--;
				free(files);
				bpf_map_delete_elem(t->procs_fd, &pid);
				return -ENOMEM;
			}
			t->procs = procs;
			t->cap_procs = cap;
		}
		p = &t->procs[t->n_procs++];
		memset(p, 0, sizeof(*p));
		p->pid = pid;
		t->stats.processes++;
	} else {
		proc_release_files(t, p);
	}
	p->files = files;
	p->n_files = n_files;
	return ret;
}

int unwind_tables__add_file(struct unwind_tables *t, Elf *elf, uint32_t dev_major,
			    uint32_t dev_minor, uint64_t inode)
{
	struct unwind_table_mapping m = {
		.dev_major = dev_major,
		.dev_minor = dev_minor,
		.inode = inode,
		.elf = elf,
	};
	size_t index;
	int ret;

	if (!t || !elf)
		return -EINVAL;
	ret = file_get(t, &m, &index);
	if (ret)
		return ret;
	/* Unused until a process maps it: first to go when space is short, newest last. */
	t->files[index].last_used = ++t->tick;
	return t->files[index].count ? 0 : -ENOENT;
}

void unwind_tables__remove_process(struct unwind_tables *t, pid_t pid)
{
	struct table_proc *p;

	if (!t)
		return;
	p = proc_find(t, pid);
	if (!p)
		return;
	bpf_map_delete_elem(t->procs_fd, &pid);
	proc_release_files(t, p);
	*p = t->procs[--t->n_procs];
	t->stats.processes--;
}

void unwind_tables__stats(const struct unwind_tables *t, struct unwind_tables_stats *out)
{
	if (!t) {
		memset(out, 0, sizeof(*out));
		return;
	}
	*out = t->stats;
}
