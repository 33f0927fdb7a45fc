/* DWARF source lines and inline chains (see dwarf_lines.h).
 *
 * libdw's dwarf_getscopes() would answer one address by walking its whole compilation unit,
 * which for a large C++ unit is tens of thousands of DIEs per lookup. Instead each unit is
 * walked once, on its first lookup, into the code ranges of its functions and inlined calls.
 * Those ranges nest (a callee's code lies inside its caller's), so sorted by start, with each
 * range pointing at the nearest earlier range that encloses it, the innermost range holding
 * an address is found by a binary search and a short walk up; the walk up continues to give
 * the inline chain. Names are read from the DIEs only for the scopes a lookup returns. */
#include "symbolize/dwarf_lines.h"

#include <dwarf.h>
#include <elfutils/libdw.h>
#include <elfutils/libdwelf.h>
#include <errno.h>
#include <gelf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "symbolize/demangle.h"

/* Deeper DIE nesting than this is malformed input, not code: stop rather than recurse. */
#define MAX_DIE_DEPTH 128
/* Unit ranges looked at backwards from the last one starting at or before an address. They
 * rarely overlap (an assembly unit claiming a whole section), so the first usually decides. */
#define MAX_UNIT_CANDIDATES 16

/* A subprogram or inlined subroutine that has code. */
struct scope {
	Dwarf_Die die;
	uint64_t entry;
	const char *name;    /* DW_AT_name through abstract origins and specifications */
	const char *linkage; /* DW_AT_linkage_name likewise */
	char *demangled;     /* of linkage, made on first use */
	uint32_t call_file, call_line;
	bool inlined;
	bool names_read, demangle_tried;
};

struct scope_range {
	uint64_t lo, hi;
	uint32_t scope;
	int32_t parent; /* nearest earlier range enclosing this one, -1 for none */
	uint32_t depth; /* DIE nesting, orders identical ranges caller first */
};

enum unit_state { UNIT_NEW, UNIT_INDEXED, UNIT_FAILED };

struct unit {
	Dwarf_Die die;	    /* root of the DIE tree with the code (a split unit's when found) */
	Dwarf_Die line_die; /* the unit whose line table applies */
	unsigned version;
	enum unit_state state;
	struct scope *scopes;
	size_t n_scopes, cap_scopes;
	struct scope_range *ranges;
	size_t n_ranges, cap_ranges;
	Dwarf_Files *files;
	size_t n_files;
	bool files_read;
	struct joined_file *joined;
	size_t n_joined;
};

/* A relative file name of the line table and the same name under the unit's comp_dir. */
struct joined_file {
	const char *raw;
	char *joined;
};

struct unit_range {
	uint64_t lo, hi;
	size_t unit;
};

struct dwarf_lines {
	Dwarf *dw;
	Dwarf *alt;	  /* set through dwarf_lines__set_alt; ours to end */
	bool alt_checked; /* libdw's own alt search done and verified */
	bool unusable;	  /* libdw found a supplementary file of another build */
	bool has_line_table;
	char *alt_build_id;

	bool units_read;
	struct unit *units;
	size_t n_units;
	struct unit_range *unit_ranges;
	size_t n_unit_ranges;
};

static bool elf_has_section(Elf *elf, const char *name, const char *compressed_name)
{
	size_t shstrndx;
	Elf_Scn *scn = NULL;

	if (elf_getshdrstrndx(elf, &shstrndx) != 0)
		return false;
	while ((scn = elf_nextscn(elf, scn)) != NULL) {
		GElf_Shdr shdr;
		const char *scn_name;

		if (!gelf_getshdr(scn, &shdr) || shdr.sh_type == SHT_NOBITS || shdr.sh_size == 0)
			continue;
		scn_name = elf_strptr(elf, shstrndx, shdr.sh_name);
		if (scn_name &&
		    (strcmp(scn_name, name) == 0 || strcmp(scn_name, compressed_name) == 0))
			return true;
	}
	return false;
}

int dwarf_lines__new(struct Elf *elf, struct dwarf_lines **out)
{
	struct dwarf_lines *d;

	*out = NULL;
	if (!elf || !elf_has_section(elf, ".debug_info", ".zdebug_info"))
		return -ENOENT;
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->dw = dwarf_begin_elf(elf, DWARF_C_READ, NULL);
	if (!d->dw) {
		free(d);
		return -ENOENT;
	}
	d->has_line_table = elf_has_section(elf, ".debug_line", ".zdebug_line");
	*out = d;
	return 0;
}

static void free_units(struct dwarf_lines *d)
{
	size_t i, j;

	for (i = 0; i < d->n_units; i++) {
		struct unit *u = &d->units[i];

		for (j = 0; j < u->n_scopes; j++)
			free(u->scopes[j].demangled);
		for (j = 0; j < u->n_joined; j++)
			free(u->joined[j].joined);
		free(u->joined);
		free(u->scopes);
		free(u->ranges);
	}
	free(d->units);
	free(d->unit_ranges);
	d->units = NULL;
	d->unit_ranges = NULL;
	d->n_units = d->n_unit_ranges = 0;
}

void dwarf_lines__free(struct dwarf_lines *d)
{
	if (!d)
		return;
	free_units(d);
	/* The main Dwarf refers to the alt one: end it first. */
	dwarf_end(d->dw);
	dwarf_end(d->alt);
	free(d->alt_build_id);
	free(d);
}

bool dwarf_lines__has_line_table(const struct dwarf_lines *d)
{
	return d && d->has_line_table && !d->unusable;
}

static char *hex_string(const unsigned char *bytes, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	char *text = malloc(len * 2 + 1);
	size_t i;

	if (!text)
		return NULL;
	for (i = 0; i < len; i++) {
		text[2 * i] = hex[bytes[i] >> 4];
		text[2 * i + 1] = hex[bytes[i] & 0xf];
	}
	text[2 * len] = '\0';
	return text;
}

int dwarf_lines__alt_link(struct dwarf_lines *d, const char **path, const char **build_id)
{
	const char *alt_name = NULL;
	const void *id = NULL;
	ssize_t id_len;

	if (!d)
		return -EINVAL;
	id_len = dwelf_dwarf_gnu_debugaltlink(d->dw, &alt_name, &id);
	if (id_len <= 0 || !alt_name)
		return -ENOENT;
	if (!d->alt_build_id) {
		d->alt_build_id = hex_string(id, (size_t)id_len);
		if (!d->alt_build_id)
			return -ENOMEM;
	}
	*path = alt_name;
	*build_id = d->alt_build_id;
	return 0;
}

int dwarf_lines__set_alt(struct dwarf_lines *d, struct Elf *alt)
{
	Dwarf *alt_dw;

	if (!d || !alt)
		return -EINVAL;
	if (d->alt)
		return -EEXIST;
	alt_dw = dwarf_begin_elf(alt, DWARF_C_READ, NULL);
	if (!alt_dw)
		return -ENOEXEC;
	dwarf_setalt(d->dw, alt_dw);
	d->alt = alt_dw;
	d->alt_checked = true;
	return 0;
}

/* Without a supplementary file set by the caller, libdw looks for one itself the first time
 * a reference needs it: by build id under /usr/lib/debug (trustworthy) and then by the
 * recorded path (not checked). Let it look now and refuse a file of another build: names
 * read from it would be wrong, not just missing. */
static void check_libdw_alt(struct dwarf_lines *d)
{
	const char *alt_name = NULL;
	const void *want = NULL, *have = NULL;
	ssize_t want_len, have_len;
	Dwarf *alt;

	d->alt_checked = true;
	want_len = dwelf_dwarf_gnu_debugaltlink(d->dw, &alt_name, &want);
	if (want_len <= 0)
		return;
	alt = dwarf_getalt(d->dw);
	if (!alt)
		return;
	have_len = dwelf_elf_gnu_build_id(dwarf_getelf(alt), &have);
	if (have_len != want_len || memcmp(have, want, (size_t)want_len) != 0)
		d->unusable = true;
}

static int compare_unit_ranges(const void *a, const void *b)
{
	const struct unit_range *x = a, *y = b;

	if (x->lo != y->lo)
		return x->lo < y->lo ? -1 : 1;
	return 0;
}

/* Reads the unit headers and the address ranges of each unit's root DIE. */
static int read_units(struct dwarf_lines *d)
{
	size_t cap_units = 0, cap_ranges = 0;
	Dwarf_CU *cu = NULL, *next = NULL;
	Dwarf_Half version;
	uint8_t unit_type;
	Dwarf_Die cudie, subdie;

	d->units_read = true;
	while (dwarf_get_units(d->dw, cu, &next, &version, &unit_type, &cudie, &subdie) == 0) {
		Dwarf_Addr base, lo, hi;
		ptrdiff_t offset = 0;
		struct unit *u;

		cu = next;
		if (unit_type != DW_UT_compile && unit_type != DW_UT_skeleton)
			continue;
		if (d->n_units == cap_units) {
			size_t cap = cap_units ? cap_units * 2 : 64;
			struct unit *grown = realloc(d->units, cap * sizeof(*grown));

			if (!grown)
				return -ENOMEM;
			d->units = grown;
			cap_units = cap;
		}
		u = &d->units[d->n_units];
		memset(u, 0, sizeof(*u));
		u->line_die = cudie;
		/* A skeleton's DIEs live in its .dwo; subdie is that unit when libdw found it. */
		u->die = unit_type == DW_UT_skeleton && dwarf_tag(&subdie) == DW_TAG_compile_unit
			     ? subdie
			     : cudie;
		u->version = version;
		while ((offset = dwarf_ranges(&cudie, offset, &base, &lo, &hi)) > 0) {
			if (hi <= lo)
				continue;
			if (d->n_unit_ranges == cap_ranges) {
				size_t cap = cap_ranges ? cap_ranges * 2 : 64;
				struct unit_range *grown =
				    realloc(d->unit_ranges, cap * sizeof(*grown));

				if (!grown)
					return -ENOMEM;
				d->unit_ranges = grown;
				cap_ranges = cap;
			}
			d->unit_ranges[d->n_unit_ranges++] =
			    (struct unit_range){.lo = lo, .hi = hi, .unit = d->n_units};
		}
		d->n_units++;
	}
	/* DWARF that covers no code (data only, or a unit without ranges) leaves the array
	 * NULL, which qsort may not be given even for no elements. */
	if (d->n_unit_ranges > 1)
		qsort(d->unit_ranges, d->n_unit_ranges, sizeof(*d->unit_ranges),
		      compare_unit_ranges);
	return 0;
}

static int push_range(struct unit *u, uint64_t lo, uint64_t hi, uint32_t scope, uint32_t depth)
{
	if (u->n_ranges == u->cap_ranges) {
		size_t cap = u->cap_ranges ? u->cap_ranges * 2 : 64;
		struct scope_range *grown = realloc(u->ranges, cap * sizeof(*grown));

		if (!grown)
			return -ENOMEM;
		u->ranges = grown;
		u->cap_ranges = cap;
	}
	u->ranges[u->n_ranges++] =
	    (struct scope_range){.lo = lo, .hi = hi, .scope = scope, .parent = -1, .depth = depth};
	return 0;
}

/* Records die when it has code: 1 when recorded, 0 when it has none, -ENOMEM. */
static int add_scope(struct unit *u, Dwarf_Die *die, bool inlined, uint32_t depth)
{
	uint64_t lowest = UINT64_MAX;
	Dwarf_Addr base, lo, hi, entry;
	Dwarf_Attribute attr;
	Dwarf_Word value;
	ptrdiff_t offset = 0;
	struct scope *s;
	size_t added = 0;
	int ret;

	if (u->n_scopes == u->cap_scopes) {
		size_t cap = u->cap_scopes ? u->cap_scopes * 2 : 32;
		struct scope *grown = realloc(u->scopes, cap * sizeof(*grown));

		if (!grown)
			return -ENOMEM;
		u->scopes = grown;
		u->cap_scopes = cap;
	}
	while ((offset = dwarf_ranges(die, offset, &base, &lo, &hi)) > 0) {
		if (hi <= lo)
			continue;
		ret = push_range(u, lo, hi, (uint32_t)u->n_scopes, depth);
		if (ret)
			return ret;
		if (lo < lowest)
			lowest = lo;
		added++;
	}
	if (!added)
		return 0;
	s = &u->scopes[u->n_scopes++];
	memset(s, 0, sizeof(*s));
	s->die = *die;
	s->inlined = inlined;
	s->entry = dwarf_entrypc(die, &entry) == 0 ? entry : lowest;
	if (inlined) {
		if (dwarf_formudata(dwarf_attr(die, DW_AT_call_file, &attr), &value) == 0)
			s->call_file = (uint32_t)value;
		if (dwarf_formudata(dwarf_attr(die, DW_AT_call_line, &attr), &value) == 0)
			s->call_line = (uint32_t)value;
	}
	return 1;
}

/* Collects the code-bearing scopes under parent. Types and variables are skipped: functions
 * defined in a class are emitted at namespace or unit level (DW_AT_specification). */
static int walk_dies(struct unit *u, Dwarf_Die *parent, uint32_t depth)
{
	Dwarf_Die child;
	int ret = 0;

	if (depth > MAX_DIE_DEPTH || dwarf_child(parent, &child) != 0)
		return 0;
	do {
		switch (dwarf_tag(&child)) {
		case DW_TAG_subprogram:
		case DW_TAG_inlined_subroutine:
			ret = add_scope(u, &child, dwarf_tag(&child) == DW_TAG_inlined_subroutine,
					depth);
			/* Declarations and abstract instances have no code below them. */
			if (ret > 0)
				ret = walk_dies(u, &child, depth + 1);
			break;
		case DW_TAG_lexical_block:
		case DW_TAG_try_block:
		case DW_TAG_catch_block:
		case DW_TAG_namespace:
		case DW_TAG_module:
			ret = walk_dies(u, &child, depth + 1);
			break;
		default:
			break;
		}
		if (ret < 0)
			return ret;
	} while (dwarf_siblingof(&child, &child) == 0);
	return 0;
}

/* Start ascending; of ranges starting together the longer (the caller) first. */
static int compare_scope_ranges(const void *a, const void *b)
{
	const struct scope_range *x = a, *y = b;

	if (x->lo != y->lo)
		return x->lo < y->lo ? -1 : 1;
	if (x->hi != y->hi)
		return x->hi > y->hi ? -1 : 1;
	if (x->depth != y->depth)
		return x->depth < y->depth ? -1 : 1;
	return 0;
}

static int index_unit(struct unit *u)
{
	int32_t *open = NULL;
	size_t n_open = 0, i;
	int ret;

	ret = walk_dies(u, &u->die, 0);
	if (ret)
		return ret;
	if (!u->n_ranges)
		return 0;
	qsort(u->ranges, u->n_ranges, sizeof(*u->ranges), compare_scope_ranges);
	/* Each range's parent is the innermost still-open range when it starts. */
	open = malloc(u->n_ranges * sizeof(*open));
	if (!open)
		return -ENOMEM;
	for (i = 0; i < u->n_ranges; i++) {
		while (n_open && u->ranges[open[n_open - 1]].hi <= u->ranges[i].lo)
			n_open--;
		u->ranges[i].parent = n_open ? open[n_open - 1] : -1;
		open[n_open++] = (int32_t)i;
	}
	free(open);
	return 0;
}

/* The innermost range of u holding addr, or -1. */
static int32_t innermost_range(const struct unit *u, uint64_t addr)
{
	size_t lo = 0, hi = u->n_ranges;
	int32_t i;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (u->ranges[mid].lo <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	/* The last range starting at or before addr; when it ended already, an enclosing one
	 * may not have (ranges nest, so any range holding addr encloses it). */
	i = (int32_t)lo - 1;
	while (i >= 0 && addr >= u->ranges[i].hi)
		i = u->ranges[i].parent;
	return i;
}

static void read_names(struct scope *s)
{
	Dwarf_Attribute attr;

	if (s->names_read)
		return;
	s->names_read = true;
	s->name = dwarf_diename(&s->die);
	s->linkage = dwarf_formstring(dwarf_attr_integrate(&s->die, DW_AT_linkage_name, &attr));
	if (!s->linkage)
		s->linkage =
		    dwarf_formstring(dwarf_attr_integrate(&s->die, DW_AT_MIPS_linkage_name, &attr));
}

static const char *readable_name(struct scope *s)
{
	read_names(s);
	if (s->linkage && !s->demangle_tried) {
		s->demangle_tried = true;
		s->demangled = demangle__readable(s->linkage);
	}
	if (s->demangled)
		return s->demangled;
	return s->name ? s->name : s->linkage;
}

/* name as an absolute path when it is relative: directories in the line table are relative
 * to the unit's DW_AT_comp_dir, which libdw does not prepend. A relative comp_dir (builds
 * with -ffile-prefix-map=...=.) cannot make anything absolute, and libdw has already put it
 * in front of names in it (DWARF 5 directory 0): such names stay as they are. Made once per
 * name; name itself when memory runs out. */
static const char *full_path(struct unit *u, const char *name)
{
	struct joined_file *grown;
	Dwarf_Attribute attr;
	const char *comp_dir;
	char *joined;
	size_t i;

	if (!name || name[0] == '/')
		return name;
	for (i = 0; i < u->n_joined; i++) {
		if (u->joined[i].raw == name)
			return u->joined[i].joined;
	}
	comp_dir = dwarf_formstring(dwarf_attr(&u->line_die, DW_AT_comp_dir, &attr));
	if (!comp_dir || comp_dir[0] != '/')
		return name;
	grown = realloc(u->joined, (u->n_joined + 1) * sizeof(*grown));
	if (!grown)
		return name;
	u->joined = grown;
	if (asprintf(&joined, "%s%s%s", comp_dir, comp_dir[strlen(comp_dir) - 1] == '/' ? "" : "/",
		     name) < 0)
		return name;
	u->joined[u->n_joined].raw = name;
	u->joined[u->n_joined].joined = joined;
	u->n_joined++;
	return joined;
}

static const char *unit_file(struct unit *u, uint32_t index)
{
	const char *name;

	if (!u->files_read) {
		u->files_read = true;
		if (dwarf_getsrcfiles(&u->line_die, &u->files, &u->n_files) != 0)
			u->files = NULL;
	}
	/* Before DWARF 5, file 0 means "no file". */
	if (!u->files || index >= u->n_files || (index == 0 && u->version < 5))
		return NULL;
	name = dwarf_filesrc(u->files, index, NULL, NULL);
	return name && strcmp(name, "???") != 0 ? full_path(u, name) : NULL;
}

/* Fills lines from the chain of range indexes (innermost first); n entries. */
static void fill_lines(struct unit *u, uint64_t addr, const int32_t *chain, size_t n,
		       struct source_line *lines, size_t *count)
{
	Dwarf_Line *row = dwarf_getsrc_die(&u->line_die, addr);
	bool all_named = true;
	size_t k;

	for (k = 0; k < n; k++) {
		struct scope *s = &u->scopes[u->ranges[chain[k]].scope];

		lines[k].function = readable_name(s);
		read_names(s);
		lines[k].system_name = s->linkage ? s->linkage : s->name;
		if (!lines[k].system_name)
			lines[k].system_name = lines[k].function;
		lines[k].file = NULL;
		lines[k].line = 0;
		if (k == 0) {
			int lineno = 0;

			if (row && dwarf_lineno(row, &lineno) == 0 && lineno > 0) {
				lines[k].file = full_path(u, dwarf_linesrc(row, NULL, NULL));
				lines[k].line = lineno;
			}
		} else {
			/* A caller is at the call site of the callee inlined into it. */
			struct scope *callee = &u->scopes[u->ranges[chain[k - 1]].scope];

			lines[k].file = unit_file(u, callee->call_file);
			lines[k].line = callee->call_line;
		}
		if (k + 1 < n && !lines[k].function)
			all_named = false;
	}
	*count = n;
	/* An unnamed callee (its name in a missing dwz file, say) cannot be shown truthfully;
	 * its caller's line still can. */
	if (!all_named) {
		lines[0] = lines[n - 1];
		*count = 1;
	}
}

/* Looks addr up in unit u. -ENOENT when no function there holds it. */
static int lookup_in_unit(struct unit *u, uint64_t addr, struct source_line *lines, size_t max,
			  size_t *count, uint64_t *entry)
{
	int32_t chain_buf[64], *chain = chain_buf;
	int32_t i, prev_scope = -1;
	size_t n = 0, cap = 64;
	bool physical = false;
	int ret = 0;

	if (u->state == UNIT_NEW) {
		ret = index_unit(u);
		if (ret == -ENOMEM) {
			/* Leave it new so a later lookup retries. */
			free(u->ranges);
			free(u->scopes);
			u->ranges = NULL;
			u->scopes = NULL;
			u->n_ranges = u->cap_ranges = u->n_scopes = u->cap_scopes = 0;
			return ret;
		}
		u->state = ret ? UNIT_FAILED : UNIT_INDEXED;
	}
	if (u->state != UNIT_INDEXED)
		return -ENOENT;
	for (i = innermost_range(u, addr); i >= 0 && !physical; i = u->ranges[i].parent) {
		const struct scope_range *r = &u->ranges[i];

		/* Malformed DWARF can leave a non-enclosing range as parent: skip it. */
		if (addr < r->lo || addr >= r->hi || (int32_t)r->scope == prev_scope)
			continue;
		if (n == cap) {
			int32_t *grown;

			cap *= 2;
			grown = chain == chain_buf ? malloc(cap * sizeof(*grown))
						   : realloc(chain, cap * sizeof(*grown));
			if (!grown) {
				ret = -ENOMEM;
				goto out;
			}
			if (chain == chain_buf)
				memcpy(grown, chain_buf, sizeof(chain_buf));
			chain = grown;
		}
		chain[n++] = i;
		prev_scope = (int32_t)r->scope;
		physical = !u->scopes[r->scope].inlined;
	}
	/* An inlined call outside any function is not something to name. */
	if (!physical) {
		ret = -ENOENT;
		goto out;
	}
	if (n > max) {
		*count = n;
		ret = -E2BIG;
		goto out;
	}
	fill_lines(u, addr, chain, n, lines, count);
	*entry = u->scopes[u->ranges[chain[n - 1]].scope].entry;
out:
	if (chain != chain_buf)
		free(chain);
	return ret;
}

int dwarf_lines__lookup(struct dwarf_lines *d, uint64_t vaddr, struct source_line *lines,
			size_t max, size_t *count, uint64_t *entry)
{
	size_t lo = 0, hi, looked;
	int ret;

	if (!d || !count || !entry || (max && !lines))
		return -EINVAL;
	*count = 0;
	if (!d->alt_checked)
		check_libdw_alt(d);
	if (d->unusable)
		return -ENOENT;
	if (!d->units_read) {
		ret = read_units(d);
		if (ret) {
			free_units(d);
			d->units_read = false;
			return ret;
		}
	}
	hi = d->n_unit_ranges;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (d->unit_ranges[mid].lo <= vaddr)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (looked = 0; lo > 0 && looked < MAX_UNIT_CANDIDATES; looked++) {
		const struct unit_range *r = &d->unit_ranges[--lo];

		if (vaddr >= r->hi)
			continue;
		ret = lookup_in_unit(&d->units[r->unit], vaddr, lines, max, count, entry);
		if (ret != -ENOENT)
			return ret;
	}
	return -ENOENT;
}
