/* The symbolizer: per-process maps snapshots, a cache of parsed ELF files keyed by (device,
 * inode) and a cache of resolved addresses keyed by (pid, snapshot epoch, address). Source
 * lines of resolved addresses are copied into chunks owned by the symbolizer, so a cached
 * answer is complete without going back to the file.
 *
 * Mappings are allocated one by one and never freed before the symbolizer: their addresses
 * are the mapping_key callers use to group frames, and a re-read of /proc/PID/maps reuses the
 * object of every mapping that did not change, so keys stay stable across dlopen(). Files are
 * opened when a process is added, not when its first sample is resolved, because by then the
 * process (and its /proc/PID/root) may be gone. */
#include "symbolize/symbolizer.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "hash.h"
#include "symbolize/debuginfo.h"
#include "symbolize/elf_file.h"
#include "symbolize/proc_maps.h"

/* An open-addressing hash table from a pair of u64 to a pointer. Values are never removed
 * (everything lives until the symbolizer is freed), which keeps probing simple. */
struct pair_map_slot {
	uint64_t a, b;
	void *value; /* NULL: empty slot */
};

struct pair_map {
	struct pair_map_slot *slots;
	size_t capacity; /* a power of two, or 0 */
	size_t count;
};

static size_t pair_hash(uint64_t a, uint64_t b)
{
	return (size_t)hash_mix64(a * 0x9e3779b97f4a7c15ULL ^ hash_mix64(b));
}

static void *pair_map__get(const struct pair_map *map, uint64_t a, uint64_t b)
{
	size_t mask, i;

	if (!map->capacity)
		return NULL;
	mask = map->capacity - 1;
	for (i = pair_hash(a, b) & mask;; i = (i + 1) & mask) {
		const struct pair_map_slot *slot = &map->slots[i];

		if (!slot->value)
			return NULL;
		if (slot->a == a && slot->b == b)
			return slot->value;
	}
}

static void pair_map__insert_slot(struct pair_map_slot *slots, size_t capacity, uint64_t a,
				  uint64_t b, void *value)
{
	size_t mask = capacity - 1, i;

	for (i = pair_hash(a, b) & mask; slots[i].value; i = (i + 1) & mask) {
		if (slots[i].a == a && slots[i].b == b)
			break;
	}
	slots[i].a = a;
	slots[i].b = b;
	slots[i].value = value;
}

/* Inserts or replaces. 0 or -ENOMEM. */
static int pair_map__put(struct pair_map *map, uint64_t a, uint64_t b, void *value)
{
	/* Grow at 50% load: probes stay short and there is always an empty slot. */
	if ((map->count + 1) * 2 > map->capacity) {
		size_t capacity = map->capacity ? map->capacity * 2 : 64, i;
		struct pair_map_slot *slots = calloc(capacity, sizeof(*slots));

		if (!slots)
			return -ENOMEM;
		for (i = 0; i < map->capacity; i++) {
			if (map->slots[i].value)
				pair_map__insert_slot(slots, capacity, map->slots[i].a,
						      map->slots[i].b, map->slots[i].value);
		}
		free(map->slots);
		map->slots = slots;
		map->capacity = capacity;
	}
	if (!pair_map__get(map, a, b))
		map->count++;
	pair_map__insert_slot(map->slots, map->capacity, a, b, value);
	return 0;
}

/* A parsed file shared by every mapping of it; elf is NULL when it could not be parsed (the
 * failure is remembered so it is not retried for every process). */
struct sym_file {
	struct elf_file *elf;
	int open_error;
	/* Missing debug information was looked for (debuginfod) before the first lookup. */
	bool debug_checked;
	bool has_line_table, has_dwarf;
};

struct sym_mapping {
	pid_t pid;
	uint64_t start, end, offset;
	uint64_t dev, inode;
	char *path; /* NULL for unnamed anonymous memory */
	bool executable, deleted;
	struct sym_file *file; /* NULL when not a file or not parsed */
	/* No truthful name: anonymous memory, or a changed file that could not be opened. */
	bool unnamed;
	char *shown_path; /* map_path when it differs from path ("[anon:jit]", "... (deleted)") */
};

struct sym_process {
	pid_t pid;
	bool gone;
	/* Bumped by symbolizer__add_process: cached addresses of an older epoch may belong to
	 * the image the process had before an exec. */
	uint32_t epoch;
	struct sym_mapping **maps; /* sorted by start */
	size_t count;
};

/* What the address cache holds for one (pid, epoch, address). */
struct resolved_addr {
	struct sym_mapping *mapping; /* NULL when no mapping holds the address */
	uint64_t function_start;
	const struct symbolized_line *lines; /* in a line_chunk */
	uint32_t n_lines;
	bool has_filenames, has_line_numbers, has_inline_frames;
};

#define LINE_CHUNK 4096

struct line_chunk {
	struct line_chunk *next;
	size_t used, capacity;
	struct symbolized_line items[];
};

#define RESOLVED_CHUNK 1024

struct resolved_chunk {
	struct resolved_chunk *next;
	size_t used;
	struct resolved_addr items[RESOLVED_CHUNK];
};

struct symbolizer {
	struct pair_map processes; /* (pid, 0) -> sym_process */
	struct pair_map files;	   /* (dev, inode) -> sym_file */
	struct pair_map addrs;	   /* (pid << 32 | epoch, addr) -> resolved_addr */

	/* Everything allocated, for freeing. */
	struct sym_mapping **all_mappings;
	size_t mapping_count, mapping_capacity;
	struct resolved_chunk *chunks;
	struct line_chunk *line_chunks;

	/* debuginfod: configured (else DEBUGINFOD_URLS decides on first need). */
	bool debuginfod_set;
	char *debuginfod_urls; /* NULL or "": never ask */
	unsigned debuginfod_timeout;
	bool debuginfod_ready; /* client made (or found unwanted) */
	struct debuginfo_client *debuginfod;
};

struct symbolizer *symbolizer__new(void)
{
	return calloc(1, sizeof(struct symbolizer));
}

int symbolizer__set_debuginfod(struct symbolizer *s, const char *urls, unsigned timeout_seconds)
{
	char *copy = NULL;

	if (!s)
		return -EINVAL;
	if (urls) {
		copy = strdup(urls);
		if (!copy)
			return -ENOMEM;
	}
	free(s->debuginfod_urls);
	debuginfo_client__free(s->debuginfod);
	s->debuginfod = NULL;
	s->debuginfod_ready = false;
	s->debuginfod_urls = copy;
	s->debuginfod_set = urls != NULL;
	s->debuginfod_timeout = timeout_seconds;
	return 0;
}

/* The debuginfod client, made on first need; NULL when no server is configured. */
static struct debuginfo_client *debuginfod_client(struct symbolizer *s)
{
	const char *urls;

	if (s->debuginfod_ready)
		return s->debuginfod;
	s->debuginfod_ready = true;
	urls = s->debuginfod_set ? s->debuginfod_urls : getenv("DEBUGINFOD_URLS");
	/* -EINVAL (no URL) means "none configured"; -ENOMEM just loses debuginfod. */
	if (urls && urls[0])
		debuginfo_client__new(urls, s->debuginfod_timeout, &s->debuginfod);
	return s->debuginfod;
}

void symbolizer__free(struct symbolizer *s)
{
	size_t i;

	if (!s)
		return;
	for (i = 0; i < s->processes.capacity; i++) {
		struct sym_process *proc = s->processes.slots[i].value;

		if (proc) {
			free(proc->maps);
			free(proc);
		}
	}
	for (i = 0; i < s->files.capacity; i++) {
		struct sym_file *file = s->files.slots[i].value;

		if (file) {
			elf_file__free(file->elf);
			free(file);
		}
	}
	for (i = 0; i < s->mapping_count; i++) {
		free(s->all_mappings[i]->path);
		free(s->all_mappings[i]->shown_path);
		free(s->all_mappings[i]);
	}
	free(s->all_mappings);
	while (s->chunks) {
		struct resolved_chunk *next = s->chunks->next;

		free(s->chunks);
		s->chunks = next;
	}
	while (s->line_chunks) {
		struct line_chunk *next = s->line_chunks->next;

		free(s->line_chunks);
		s->line_chunks = next;
	}
	debuginfo_client__free(s->debuginfod);
	free(s->debuginfod_urls);
	free(s->processes.slots);
	free(s->files.slots);
	free(s->addrs.slots);
	free(s);
}

static uint64_t entry_dev(const struct proc_map_entry *e)
{
	return (uint64_t)e->dev_major << 32 | e->dev_minor;
}

static const char *entry_path(const struct proc_map_entry *e)
{
	return strcmp(e->path, "[anon]") == 0 ? NULL : e->path;
}

/* Memory no file backs. The kernel's own images ([vdso], [vsyscall], [vvar], [uprobes]) are
 * named by what they are; everything else there (JIT code, heap, stack) has no function name
 * to give. */
static bool is_anonymous(const struct proc_map_entry *e)
{
	static const char *const kernel_images[] = {"[vdso]", "[vsyscall]", "[vvar]", "[uprobes]"};
	size_t i;

	if (e->inode != 0)
		return false;
	for (i = 0; i < sizeof(kernel_images) / sizeof(kernel_images[0]); i++) {
		if (strcmp(e->path, kernel_images[i]) == 0)
			return false;
	}
	return true;
}

static bool same_mapping(const struct sym_mapping *m, const struct proc_map_entry *e)
{
	const char *path = entry_path(e);

	if (m->start != e->start || m->end != e->end || m->offset != e->offset ||
	    m->dev != entry_dev(e) || m->inode != e->inode || m->executable != e->executable ||
	    m->deleted != e->deleted)
		return false;
	if (!m->path || !path)
		return !m->path && !path;
	return strcmp(m->path, path) == 0;
}

static struct sym_mapping *find_mapping(struct sym_mapping *const *maps, size_t count,
					uint64_t addr)
{
	size_t lo = 0, hi = count;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (maps[mid]->start <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo && addr < maps[lo - 1]->end)
		return maps[lo - 1];
	return NULL;
}

static struct sym_mapping *new_mapping(struct symbolizer *s, pid_t pid,
				       const struct proc_map_entry *e)
{
	const char *path = entry_path(e);
	struct sym_mapping *m;

	if (s->mapping_count == s->mapping_capacity) {
		size_t capacity = s->mapping_capacity ? s->mapping_capacity * 2 : 256;
		struct sym_mapping **grown = realloc(s->all_mappings, capacity * sizeof(*grown));

		if (!grown)
			return NULL;
		s->all_mappings = grown;
		s->mapping_capacity = capacity;
	}
	m = calloc(1, sizeof(*m));
	if (!m)
		return NULL;
	if (path) {
		m->path = strdup(path);
		if (!m->path) {
			free(m);
			return NULL;
		}
	}
	m->pid = pid;
	m->start = e->start;
	m->end = e->end;
	m->offset = e->offset;
	m->dev = entry_dev(e);
	m->inode = e->inode;
	m->executable = e->executable;
	m->deleted = e->deleted;
	if (is_anonymous(e)) {
		m->unnamed = true;
		/* Say what unnamed code most likely is, rather than leave the mapping blank. */
		if (!path && e->executable) {
			m->shown_path = strdup("[anon:jit]");
			if (!m->shown_path) {
				free(m->path);
				free(m);
				return NULL;
			}
		}
	}
	s->all_mappings[s->mapping_count++] = m;
	return m;
}

/* A file mapping whose file changed on disk and could not be opened as mapped: the path now
 * names other contents (or none), so it gets no names and says so. 0 or -ENOMEM. */
static int mark_changed_file(struct sym_mapping *m)
{
	const char *what = m->deleted ? "deleted" : "replaced";

	if (m->unnamed || !m->file || m->file->elf || !m->path ||
	    (!m->deleted && m->file->open_error != -ESTALE))
		return 0;
	if (asprintf(&m->shown_path, "%s (%s)", m->path, what) < 0) {
		m->shown_path = NULL;
		return -ENOMEM;
	}
	m->unnamed = true;
	return 0;
}

/* Opens the file behind e as the process sees it. The path in maps may since have been
 * replaced (a package upgrade) or deleted: then the mapping itself, /proc/PID/map_files/,
 * is the only way to the right inode (it needs CAP_SYS_ADMIN, which the agent has). */
static int open_mapped_file(pid_t pid, const struct proc_map_entry *e, struct elf_file **out)
{
	char path[PATH_MAX + 64];
	bool replaced = false;
	struct stat st;
	int n, ret;

	*out = NULL;
	if (!e->deleted) {
		n = snprintf(path, sizeof(path), "/proc/%d/root%s", (int)pid, e->path);
		if (n > 0 && (size_t)n < sizeof(path) && stat(path, &st) == 0) {
			if ((uint64_t)st.st_ino == e->inode)
				return elf_file__open(path, out);
			replaced = true;
		}
	}
	n = snprintf(path, sizeof(path), "/proc/%d/map_files/%" PRIx64 "-%" PRIx64, (int)pid,
		     e->start, e->end);
	if (n <= 0 || (size_t)n >= sizeof(path))
		return -ENAMETOOLONG;
	ret = elf_file__open(path, out);
	/* The path holds another file now and the mapped one is out of reach. */
	if (ret && ret != -ENOMEM && replaced)
		ret = -ESTALE;
	return ret;
}

/* The shared sym_file for e, opening it when open_new is set. NULL when not cached and not
 * opened; *err is -ENOMEM when memory ran out. */
static struct sym_file *file_for_entry(struct symbolizer *s, pid_t pid,
				       const struct proc_map_entry *e, bool open_new, int *err)
{
	struct sym_file *file;

	*err = 0;
	file = pair_map__get(&s->files, entry_dev(e), e->inode);
	if (file || !open_new)
		return file;

	file = calloc(1, sizeof(*file));
	if (!file) {
		*err = -ENOMEM;
		return NULL;
	}
	file->open_error = open_mapped_file(pid, e, &file->elf);
	if (file->open_error == -ENOMEM) {
		free(file);
		*err = -ENOMEM;
		return NULL;
	}
	*err = pair_map__put(&s->files, entry_dev(e), e->inode, file);
	if (*err) {
		elf_file__free(file->elf);
		free(file);
		return NULL;
	}
	return file;
}

/* Re-reads the maps of proc into a new snapshot, reusing unchanged mappings. */
static int snapshot_process(struct symbolizer *s, struct sym_process *proc)
{
	struct sym_mapping **maps = NULL;
	struct proc_maps *pm = NULL;
	size_t count, i;
	int pass, ret;

	ret = proc_maps__read(proc->pid, &pm);
	if (ret) {
		if (ret == -ESRCH)
			proc->gone = true;
		return ret;
	}
	proc->gone = false;
	count = proc_maps__count(pm);
	maps = calloc(count, sizeof(*maps));
	if (!maps) {
		ret = -ENOMEM;
		goto out;
	}
	for (i = 0; i < count; i++) {
		const struct proc_map_entry *e = proc_maps__entry(pm, i);
		struct sym_mapping *old = find_mapping(proc->maps, proc->count, e->start);

		if (old && same_mapping(old, e)) {
			maps[i] = old;
			continue;
		}
		maps[i] = new_mapping(s, proc->pid, e);
		if (!maps[i]) {
			ret = -ENOMEM;
			goto out;
		}
	}
	/* Executable mappings first, so the read-only segments of the same file (ELF header,
	 * .rodata) then find the file in the cache without opening data files such as
	 * locale-archive that are mapped but never hold code. */
	for (pass = 0; pass < 2; pass++) {
		for (i = 0; i < count; i++) {
			const struct proc_map_entry *e = proc_maps__entry(pm, i);

			if (maps[i]->file || !proc_map_entry__is_file(e))
				continue;
			maps[i]->file =
			    file_for_entry(s, proc->pid, e, pass == 0 && e->executable, &ret);
			if (ret)
				goto out;
		}
	}
	for (i = 0; i < count; i++) {
		ret = mark_changed_file(maps[i]);
		if (ret)
			goto out;
	}
	free(proc->maps);
	proc->maps = maps;
	proc->count = count;
	maps = NULL;
out:
	free(maps);
	proc_maps__free(pm);
	return ret;
}

int symbolizer__add_process(struct symbolizer *s, pid_t pid)
{
	struct sym_process *proc;
	int ret;

	if (!s || pid <= 0)
		return -EINVAL;
	proc = pair_map__get(&s->processes, (uint64_t)pid, 0);
	if (proc) {
		ret = snapshot_process(s, proc);
		if (!ret)
			proc->epoch++;
		return ret;
	}
	proc = calloc(1, sizeof(*proc));
	if (!proc)
		return -ENOMEM;
	proc->pid = pid;
	ret = snapshot_process(s, proc);
	if (!ret)
		ret = pair_map__put(&s->processes, (uint64_t)pid, 0, proc);
	if (ret) {
		free(proc->maps);
		free(proc);
	}
	return ret;
}

static struct resolved_addr *alloc_resolved(struct symbolizer *s)
{
	if (!s->chunks || s->chunks->used == RESOLVED_CHUNK) {
		struct resolved_chunk *chunk = malloc(sizeof(*chunk));

		if (!chunk)
			return NULL;
		chunk->next = s->chunks;
		chunk->used = 0;
		s->chunks = chunk;
	}
	return &s->chunks->items[s->chunks->used++];
}

/* Room for n lines that live as long as the symbolizer. */
static struct symbolized_line *alloc_lines(struct symbolizer *s, size_t n)
{
	struct line_chunk *chunk = s->line_chunks;

	if (!chunk || chunk->capacity - chunk->used < n) {
		size_t capacity = n > LINE_CHUNK ? n : LINE_CHUNK;

		chunk = malloc(sizeof(*chunk) + capacity * sizeof(chunk->items[0]));
		if (!chunk)
			return NULL;
		chunk->used = 0;
		chunk->capacity = capacity;
		chunk->next = s->line_chunks;
		s->line_chunks = chunk;
	}
	chunk->used += n;
	return &chunk->items[chunk->used - n];
}

/* Before a file's first lookup: fetch what its debug information lacks from debuginfod (the
 * DWARF, or the dwz file the DWARF refers to). Once per file; the client remembers answers
 * per build id, so the same build id in another inode (another container) is not asked
 * again. Failing to fetch only leaves the file with the names it has. */
static void complete_debug_info(struct symbolizer *s, struct sym_file *file)
{
	struct debuginfo_client *client;
	const char *build_id, *alt_id, *path;

	if (file->debug_checked)
		return;
	file->debug_checked = true;
	build_id = elf_file__build_id(file->elf);
	if (build_id && !elf_file__has_dwarf(file->elf)) {
		client = debuginfod_client(s);
		if (client && debuginfo_client__find_debuginfo(client, build_id, &path) == 0)
			elf_file__use_debug_file(file->elf, path);
	}
	alt_id = elf_file__missing_alt_build_id(file->elf);
	if (alt_id) {
		client = debuginfod_client(s);
		if (client && debuginfo_client__find_debuginfo(client, alt_id, &path) == 0)
			elf_file__use_alt_file(file->elf, path);
	}
	file->has_dwarf = elf_file__has_dwarf(file->elf);
	file->has_line_table = elf_file__has_line_table(file->elf);
}

/* Names addr (a runtime address in m) into r. 0 or -ENOMEM. */
static int resolve_in_mapping(struct symbolizer *s, const struct sym_mapping *m, uint64_t addr,
			      struct resolved_addr *r)
{
	const struct source_line *lines;
	struct symbolized_line *copy;
	uint64_t vaddr, func_vaddr = 0;
	size_t n = 0, i;
	int ret;

	if (m->unnamed || !m->file || !m->file->elf)
		return 0;
	complete_debug_info(s, m->file);
	r->has_inline_frames = m->file->has_dwarf;
	r->has_filenames = r->has_line_numbers = m->file->has_line_table;
	/* maps arithmetic gives the file offset; the program headers give the vaddr there.
	 * This is right for every segment of PIE, non-PIE (vaddr == addr) and libraries. */
	if (elf_file__offset_to_vaddr(m->file->elf, addr - m->start + m->offset, &vaddr) != 0)
		return 0;
	ret = elf_file__lines_at(m->file->elf, vaddr, &lines, &n, &func_vaddr);
	if (ret || !n)
		return ret == -ENOMEM ? ret : 0;
	copy = alloc_lines(s, n);
	if (!copy)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		copy[i].function = lines[i].function;
		copy[i].system_name = lines[i].system_name;
		copy[i].file = lines[i].file;
		copy[i].line = lines[i].line;
	}
	r->lines = copy;
	r->n_lines = (uint32_t)n;
	/* Unsigned wrap-around keeps this right for code placed below its entry (.cold). */
	r->function_start = addr - (vaddr - func_vaddr);
	return 0;
}

static void fill_frame(const struct resolved_addr *r, struct symbolized_frame *out)
{
	const struct sym_mapping *m = r->mapping;

	memset(out, 0, sizeof(*out));
	if (!m)
		return;
	out->mapping_key = m;
	out->map_start = m->start;
	out->map_limit = m->end;
	out->map_file_offset = m->offset;
	out->map_path = m->shown_path ? m->shown_path : m->path;
	out->build_id = m->file && m->file->elf ? elf_file__build_id(m->file->elf) : NULL;
	out->lines = r->lines;
	out->n_lines = r->n_lines;
	if (r->n_lines) {
		out->function = r->lines[r->n_lines - 1].function;
		out->system_name = r->lines[r->n_lines - 1].system_name;
		out->function_start = r->function_start;
	}
	out->has_filenames = r->has_filenames;
	out->has_line_numbers = r->has_line_numbers;
	out->has_inline_frames = r->has_inline_frames;
	out->unnamed_memory = m->unnamed;
}

int symbolizer__resolve(struct symbolizer *s, pid_t pid, uint64_t addr, bool is_return_address,
			struct symbolized_frame *out)
{
	struct sym_process *proc;
	struct resolved_addr *r;
	uint64_t lookup, cache_key;
	int ret;

	if (!s || !out || pid <= 0)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	proc = pair_map__get(&s->processes, (uint64_t)pid, 0);
	if (!proc) {
		ret = symbolizer__add_process(s, pid);
		if (ret)
			return ret;
		proc = pair_map__get(&s->processes, (uint64_t)pid, 0);
		if (!proc)
			return -ENOMEM;
	}
	lookup = is_return_address && addr ? addr - 1 : addr;
	cache_key = (uint64_t)(uint32_t)pid << 32 | proc->epoch;
	r = pair_map__get(&s->addrs, cache_key, lookup);
	if (r) {
		fill_frame(r, out);
		return 0;
	}

	r = alloc_resolved(s);
	if (!r)
		return -ENOMEM;
	memset(r, 0, sizeof(*r));
	r->mapping = find_mapping(proc->maps, proc->count, lookup);
	if (!r->mapping && !proc->gone) {
		/* Not in the snapshot: maybe a library loaded since. A failure here (the process
		 * is gone) just leaves the old snapshot in place. */
		ret = snapshot_process(s, proc);
		if (ret == -ENOMEM)
			return ret;
		r->mapping = find_mapping(proc->maps, proc->count, lookup);
	}
	if (r->mapping) {
		ret = resolve_in_mapping(s, r->mapping, lookup, r);
		if (ret)
			return ret;
	}
	/* Misses are cached too, so a stray address re-reads the maps only once. */
	ret = pair_map__put(&s->addrs, cache_key, lookup, r);
	if (ret)
		return ret;
	fill_frame(r, out);
	return 0;
}
