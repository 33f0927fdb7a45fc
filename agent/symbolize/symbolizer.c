/* The symbolizer: per-process maps snapshots, a cache of parsed ELF files keyed by (device,
 * inode) and, per process, a cache of resolved addresses keyed by (snapshot epoch, address).
 * Source lines of resolved addresses are copied into chunks owned by their process, so a
 * cached answer is complete without going back to the file.
 *
 * Everything a process brings is owned by its sym_process and freed together when the
 * process is removed: its mappings (allocated one by one and kept for the process's life,
 * because their addresses are the mapping_key callers group frames by, and a re-read of
 * /proc/PID/maps reuses the object of every mapping that did not change, so keys stay stable
 * across dlopen()), its resolved addresses and its lines. Files are shared: every mapping
 * holds a reference to its file; a parsed file no mapping refers to waits on a short
 * least-recently-released list for the next process to map it (a restarted service maps the
 * same libraries again) and is closed when the list is full. The parsed file keeps its inode
 * mapped, so the (device, inode) key cannot come to name another file while it is cached. A
 * file that could not be parsed holds no such reference, so it is forgotten as soon as it is
 * unused.
 *
 * Files are opened when a process is added, not when its first sample is resolved, because
 * by then the process (and its /proc/PID/root) may be gone. */
#include "symbolize/symbolizer.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "util/hash.h"
#include "symbolize/debuginfo.h"
#include "symbolize/elf_file.h"
#include "symbolize/proc_maps.h"

/* An open-addressing hash table (linear probing) from a pair of u64 to a pointer. Removal
 * shifts the entries after the freed slot back instead of leaving tombstones, so a table
 * with many insert/remove cycles (processes come and go for days) keeps short probes and
 * never needs a rebuild. */
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

/* Removes (a, b); returns its value, NULL when absent. Lookups stop at the first empty slot,
 * so the hole left behind is refilled by each later entry of the run whose home slot lies at
 * or before the hole (cyclically): an entry whose home lies after the hole is never probed
 * from before it and stays where it is. */
static void *pair_map__remove(struct pair_map *map, uint64_t a, uint64_t b)
{
	size_t mask, hole, i;
	void *value;

	if (!map->capacity)
		return NULL;
	mask = map->capacity - 1;
	for (hole = pair_hash(a, b) & mask;; hole = (hole + 1) & mask) {
		if (!map->slots[hole].value)
			return NULL;
		if (map->slots[hole].a == a && map->slots[hole].b == b)
			break;
	}
	value = map->slots[hole].value;
	for (i = (hole + 1) & mask; map->slots[i].value; i = (i + 1) & mask) {
		size_t home = pair_hash(map->slots[i].a, map->slots[i].b) & mask;

		/* Distances back from i: the entry may move when the hole is no further from i
		 * than its home is. */
		if (((i - home) & mask) >= ((i - hole) & mask)) {
			map->slots[hole] = map->slots[i];
			hole = i;
		}
	}
	map->slots[hole].value = NULL;
	map->count--;
	return value;
}

/* A parsed file shared by every mapping of it; elf is NULL when it could not be parsed (the
 * failure is remembered while some mapping refers to it, so it is not retried for every
 * process). */
struct sym_file {
	uint64_t dev, inode; /* its key in symbolizer.files */
	struct elf_file *elf;
	int open_error;
	/* Missing debug information was looked for (debuginfod) before the first lookup. */
	bool debug_checked;
	bool has_line_table, has_dwarf;
	size_t users; /* mappings referring to it */
	/* On the unused list (users == 0): oldest first. */
	bool unused;
	struct sym_file *unused_prev, *unused_next;
};

struct sym_mapping {
	pid_t pid;
	uint64_t start, end, offset;
	uint64_t dev, inode;
	char *path; /* NULL for unnamed anonymous memory */
	bool executable, deleted;
	struct sym_file *file; /* NULL when not a file or not parsed; holds a reference */
	/* No truthful name: anonymous memory, or a changed file that could not be opened. */
	bool unnamed;
	char *shown_path; /* map_path when it differs from path ("[anon:jit]", "... (deleted)") */
};

/* What the address cache holds for one (epoch, address) of a process. */
struct resolved_addr {
	struct sym_mapping *mapping; /* NULL when no mapping holds the address */
	uint64_t function_start;
	const struct symbolized_line *lines; /* in a line_chunk */
	uint32_t n_lines;
	bool has_filenames, has_line_numbers, has_inline_frames;
};

/* Chunks start small and double up to these sizes: most traced processes resolve a few
 * hundred addresses, and hundreds of processes are known at once. */
#define LINE_CHUNK_MIN	   64
#define LINE_CHUNK	   4096
#define RESOLVED_CHUNK_MIN 32
#define RESOLVED_CHUNK	   1024

struct line_chunk {
	struct line_chunk *next;
	size_t used, capacity;
	struct symbolized_line items[];
};

struct resolved_chunk {
	struct resolved_chunk *next;
	size_t used, capacity;
	struct resolved_addr items[];
};

struct sym_process {
	pid_t pid;
	bool gone;
	/* Maps from a saved text (symbolizer__add_saved_process): files are opened by their
	 * path, the maps are never re-read. */
	bool saved;
	/* Bumped by symbolizer__add_process: cached addresses of an older epoch may belong to
	 * the image the process had before an exec. */
	uint32_t epoch;
	struct sym_mapping **maps; /* the current snapshot, sorted by start */
	size_t count;
	/* When symbolizer__is_code last re-read the maps for an address outside them: a stray
	 * address in every sample re-reads them at most every SYM_CODE_REREAD_NS. */
	uint64_t code_reread_ns;

	/* Owned by the process, freed with it: */
	struct sym_mapping **mappings; /* every mapping of every snapshot */
	size_t mapping_count, mapping_capacity;
	struct pair_map addrs; /* (epoch, addr) -> resolved_addr */
	struct resolved_chunk *chunks;
	struct line_chunk *line_chunks;
};

struct symbolizer {
	struct pair_map processes; /* (pid, 0) -> sym_process */
	struct pair_map files;	   /* (dev, inode) -> sym_file */
	size_t unused_count;	   /* files on the unused list */
	struct sym_file *unused_oldest, *unused_newest;

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

static void file_free(struct sym_file *file)
{
	elf_file__free(file->elf);
	free(file);
}

static void unused_unlink(struct symbolizer *s, struct sym_file *file)
{
	if (file->unused_prev)
		file->unused_prev->unused_next = file->unused_next;
	else
		s->unused_oldest = file->unused_next;
	if (file->unused_next)
		file->unused_next->unused_prev = file->unused_prev;
	else
		s->unused_newest = file->unused_prev;
	file->unused_prev = file->unused_next = NULL;
	file->unused = false;
	s->unused_count--;
}

/* Drops file from the cache and closes it. */
static void file_evict(struct symbolizer *s, struct sym_file *file)
{
	if (file->unused)
		unused_unlink(s, file);
	pair_map__remove(&s->files, file->dev, file->inode);
	file_free(file);
}

/* One more mapping refers to file. */
static void file_hold(struct symbolizer *s, struct sym_file *file)
{
	if (file->unused)
		unused_unlink(s, file);
	file->users++;
}

/* One mapping fewer refers to file. An unused parsed file waits on the unused list, newest
 * last, and the oldest one is closed beyond SYMBOLIZER_UNUSED_FILES. An unused failure is
 * forgotten: it holds no reference to its inode, which may come to be another file's. */
static void file_release(struct symbolizer *s, struct sym_file *file)
{
	if (!file || --file->users)
		return;
	if (!file->elf) {
		file_evict(s, file);
		return;
	}
	file->unused = true;
	file->unused_prev = s->unused_newest;
	file->unused_next = NULL;
	if (s->unused_newest)
		s->unused_newest->unused_next = file;
	else
		s->unused_oldest = file;
	s->unused_newest = file;
	s->unused_count++;
	if (s->unused_count > SYMBOLIZER_UNUSED_FILES)
		file_evict(s, s->unused_oldest);
}

/* Frees proc and everything it owns, and releases its files. proc need not be in
 * s->processes (a process whose first snapshot failed). */
static void process_free(struct symbolizer *s, struct sym_process *proc)
{
	size_t i;

	for (i = 0; i < proc->mapping_count; i++) {
		struct sym_mapping *m = proc->mappings[i];

		file_release(s, m->file);
		free(m->path);
		free(m->shown_path);
		free(m);
	}
	free(proc->mappings);
	free(proc->maps);
	free(proc->addrs.slots);
	while (proc->chunks) {
		struct resolved_chunk *next = proc->chunks->next;

		free(proc->chunks);
		proc->chunks = next;
	}
	while (proc->line_chunks) {
		struct line_chunk *next = proc->line_chunks->next;

		free(proc->line_chunks);
		proc->line_chunks = next;
	}
	free(proc);
}

void symbolizer__free(struct symbolizer *s)
{
	size_t i;

	if (!s)
		return;
	for (i = 0; i < s->processes.capacity; i++) {
		if (s->processes.slots[i].value)
			process_free(s, s->processes.slots[i].value);
	}
	/* Every file is unused now. */
	for (i = 0; i < s->files.capacity; i++) {
		if (s->files.slots[i].value)
			file_free(s->files.slots[i].value);
	}
	debuginfo_client__free(s->debuginfod);
	free(s->debuginfod_urls);
	free(s->processes.slots);
	free(s->files.slots);
	free(s);
}

void symbolizer__remove_process(struct symbolizer *s, pid_t pid)
{
	struct sym_process *proc;

	if (!s || pid <= 0)
		return;
	proc = pair_map__remove(&s->processes, (uint64_t)pid, 0);
	if (proc)
		process_free(s, proc);
}

size_t symbolizer__process_count(const struct symbolizer *s)
{
	return s ? s->processes.count : 0;
}

size_t symbolizer__file_count(const struct symbolizer *s)
{
	return s ? s->files.count : 0;
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

/* A mapping of e owned by proc (its file is attached later). */
static struct sym_mapping *new_mapping(struct sym_process *proc, const struct proc_map_entry *e)
{
	const char *path = entry_path(e);
	struct sym_mapping *m;

	if (proc->mapping_count == proc->mapping_capacity) {
		size_t capacity = proc->mapping_capacity ? proc->mapping_capacity * 2 : 32;
		struct sym_mapping **grown = realloc(proc->mappings, capacity * sizeof(*grown));

		if (!grown)
			return NULL;
		proc->mappings = grown;
		proc->mapping_capacity = capacity;
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
	m->pid = proc->pid;
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
	proc->mappings[proc->mapping_count++] = m;
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
 * is the only way to the right inode (it needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN: the
 * unit grants the former). */
static int open_mapped_file(pid_t pid, bool saved, const struct proc_map_entry *e,
			    struct elf_file **out)
{
	char path[PATH_MAX + 64];
	bool replaced = false;
	struct stat st;
	int n, ret;

	*out = NULL;
	if (saved) {
		/* The process is gone: its files by path, as long as they are the ones it
		 * mapped. */
		if (e->deleted || stat(e->path, &st) != 0)
			return -ENOENT;
		if ((uint64_t)st.st_ino != e->inode)
			return -ESTALE;
		return elf_file__open(e->path, out);
	}
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
 * opened; *err is -ENOMEM when memory ran out. The caller takes a reference (file_hold). */
static struct sym_file *file_for_entry(struct symbolizer *s, pid_t pid, bool saved,
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
	file->dev = entry_dev(e);
	file->inode = e->inode;
	file->open_error = open_mapped_file(pid, saved, e, &file->elf);
	if (file->open_error == -ENOMEM) {
		free(file);
		*err = -ENOMEM;
		return NULL;
	}
	*err = pair_map__put(&s->files, file->dev, file->inode, file);
	if (*err) {
		file_free(file);
		return NULL;
	}
	return file;
}

static int install_snapshot(struct symbolizer *s, struct sym_process *proc, struct proc_maps *pm);

/* Re-reads the maps of proc into a new snapshot, reusing unchanged mappings. */
static int snapshot_process(struct symbolizer *s, struct sym_process *proc)
{
	struct proc_maps *pm = NULL;
	int ret;

	if (proc->saved)
		return -ESRCH;
	ret = proc_maps__read(proc->pid, &pm);
	if (ret) {
		if (ret == -ESRCH)
			proc->gone = true;
		return ret;
	}
	proc->gone = false;
	return install_snapshot(s, proc, pm);
}

/* Makes pm (taken over, freed here) proc's snapshot. */
static int install_snapshot(struct symbolizer *s, struct sym_process *proc, struct proc_maps *pm)
{
	struct sym_mapping **maps = NULL;
	size_t count, i;
	int pass, ret = 0;

	count = proc_maps__count(pm);
	maps = calloc(count ? count : 1, sizeof(*maps));
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
		/* Owned by proc from here on, so an error below loses nothing. */
		maps[i] = new_mapping(proc, e);
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
			struct sym_file *file;

			if (maps[i]->file || !proc_map_entry__is_file(e))
				continue;
			file = file_for_entry(s, proc->pid, proc->saved, e,
					      pass == 0 && e->executable, &ret);
			if (ret)
				goto out;
			if (file) {
				file_hold(s, file);
				maps[i]->file = file;
			}
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
	if (ret)
		process_free(s, proc);
	return ret;
}

int symbolizer__add_saved_process(struct symbolizer *s, pid_t pid, const char *maps_text,
				  size_t len)
{
	struct sym_process *proc;
	struct proc_maps *pm = NULL;
	int ret;

	if (!s || pid <= 0 || !maps_text || pair_map__get(&s->processes, (uint64_t)pid, 0))
		return -EINVAL;
	ret = proc_maps__parse(maps_text, len, &pm);
	if (ret)
		return ret;
	proc = calloc(1, sizeof(*proc));
	if (!proc) {
		proc_maps__free(pm);
		return -ENOMEM;
	}
	proc->pid = pid;
	proc->saved = true;
	proc->gone = true;
	ret = install_snapshot(s, proc, pm);
	if (!ret)
		ret = pair_map__put(&s->processes, (uint64_t)pid, 0, proc);
	if (ret)
		process_free(s, proc);
	return ret;
}

static struct resolved_addr *alloc_resolved(struct sym_process *proc)
{
	struct resolved_chunk *chunk = proc->chunks;

	if (!chunk || chunk->used == chunk->capacity) {
		size_t capacity = chunk ? chunk->capacity * 2 : RESOLVED_CHUNK_MIN;

		if (capacity > RESOLVED_CHUNK)
			capacity = RESOLVED_CHUNK;
		chunk = malloc(sizeof(*chunk) + capacity * sizeof(chunk->items[0]));
		if (!chunk)
			return NULL;
		chunk->next = proc->chunks;
		chunk->used = 0;
		chunk->capacity = capacity;
		proc->chunks = chunk;
	}
	return &chunk->items[chunk->used++];
}

/* Room for n lines that live as long as proc. */
static struct symbolized_line *alloc_lines(struct sym_process *proc, size_t n)
{
	struct line_chunk *chunk = proc->line_chunks;

	if (!chunk || chunk->capacity - chunk->used < n) {
		size_t capacity = chunk ? chunk->capacity * 2 : LINE_CHUNK_MIN;

		if (capacity > LINE_CHUNK)
			capacity = LINE_CHUNK;
		if (capacity < n)
			capacity = n;
		chunk = malloc(sizeof(*chunk) + capacity * sizeof(chunk->items[0]));
		if (!chunk)
			return NULL;
		chunk->used = 0;
		chunk->capacity = capacity;
		chunk->next = proc->line_chunks;
		proc->line_chunks = chunk;
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
static int resolve_in_mapping(struct symbolizer *s, struct sym_process *proc,
			      const struct sym_mapping *m, uint64_t addr, struct resolved_addr *r)
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
	copy = alloc_lines(proc, n);
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

#define SYM_CODE_REREAD_NS (10 * 1000000ull)

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The kernel's return-probe page: its first slot is the trampoline a return probe puts in
 * place of a return address, and nothing there is anyone's caller. */
static bool is_uprobes_page(const struct sym_mapping *m)
{
	return m->inode == 0 && m->path && strcmp(m->path, "[uprobes]") == 0;
}

int symbolizer__is_code(struct symbolizer *s, pid_t pid, uint64_t addr)
{
	struct sym_process *proc;
	struct sym_mapping *m, *m_at;
	uint64_t now;
	int ret;

	if (!s || pid <= 0)
		return -EINVAL;
	if (addr == 0)
		return 0;
	proc = pair_map__get(&s->processes, (uint64_t)pid, 0);
	if (!proc) {
		ret = symbolizer__add_process(s, pid);
		if (ret)
			return ret == -ENOMEM ? ret : 1;
		proc = pair_map__get(&s->processes, (uint64_t)pid, 0);
		if (!proc)
			return -ENOMEM;
	}
	/* Inside the call instruction, as symbolizer__resolve looks a return address up. */
	m = find_mapping(proc->maps, proc->count, addr - 1);
	if (!m && !proc->gone && !proc->saved) {
		now = now_ns();
		if (!proc->code_reread_ns || now - proc->code_reread_ns >= SYM_CODE_REREAD_NS) {
			proc->code_reread_ns = now;
			ret = snapshot_process(s, proc);
			if (ret == -ENOMEM)
				return ret;
			m = find_mapping(proc->maps, proc->count, addr - 1);
		}
	}
	/* Gone since the snapshot: maybe a library it loaded since. Saved maps are all there is. */
	if (!m)
		return proc->gone && !proc->saved ? 1 : 0;
	/* The trampoline is the page's first byte: addr - 1 may be in the mapping below. */
	m_at = find_mapping(proc->maps, proc->count, addr);
	if (m_at && is_uprobes_page(m_at))
		return 0;
	return m->executable && !is_uprobes_page(m);
}

int symbolizer__resolve(struct symbolizer *s, pid_t pid, uint64_t addr, bool is_return_address,
			struct symbolized_frame *out)
{
	struct sym_process *proc;
	struct resolved_addr *r;
	uint64_t lookup;
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
	r = pair_map__get(&proc->addrs, proc->epoch, lookup);
	if (r) {
		fill_frame(r, out);
		return 0;
	}

	r = alloc_resolved(proc);
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
		ret = resolve_in_mapping(s, proc, r->mapping, lookup, r);
		if (ret)
			return ret;
	}
	/* Misses are cached too, so a stray address re-reads the maps only once. */
	ret = pair_map__put(&proc->addrs, proc->epoch, lookup, r);
	if (ret)
		return ret;
	fill_frame(r, out);
	return 0;
}
