/* /proc/PID/maps snapshots. The whole file is read in one go before parsing so the snapshot
 * is as close to one instant as the kernel allows (it builds the text per read() call), then
 * each line becomes an entry with its own copy of the path, so the snapshot outlives both
 * the buffer and the process. */
#include "symbolize/proc_maps.h"
#include "util/grow.h"
#include "util/small_file.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct proc_maps {
	struct proc_map_entry *entries;
	size_t count;
};

#define DELETED_SUFFIX " (deleted)"

static void free_entries(struct proc_map_entry *entries, size_t count)
{
	size_t i;

	for (i = 0; i < count; i++)
		free((char *)entries[i].path);
	free(entries);
}

void proc_maps__free(struct proc_maps *maps)
{
	if (!maps)
		return;
	free_entries(maps->entries, maps->count);
	free(maps);
}

/* One line without its newline: "start-end perms offset major:minor inode   path". */
static int parse_line(const char *line, size_t len, struct proc_map_entry *entry)
{
	char perms[5];
	char *copy, *path;
	size_t path_len;
	int consumed = 0;
	int ret = 0;

	/* sscanf needs a terminated string; lines are short, a copy is cheap. */
	copy = strndup(line, len);
	if (!copy)
		return -ENOMEM;

	memset(entry, 0, sizeof(*entry));
	if (sscanf(copy,
		   "%" SCNx64 "-%" SCNx64 " %4s %" SCNx64 " %" SCNx32 ":%" SCNx32 " %" SCNu64 "%n",
		   &entry->start, &entry->end, perms, &entry->offset, &entry->dev_major,
		   &entry->dev_minor, &entry->inode, &consumed) != 7 ||
	    strlen(perms) != 4 || entry->end < entry->start) {
		ret = -EINVAL;
		goto out;
	}
	entry->readable = perms[0] == 'r';
	entry->writable = perms[1] == 'w';
	entry->executable = perms[2] == 'x';
	entry->private_ = perms[3] == 'p';

	/* The kernel pads with spaces before the path; the path itself may contain spaces. */
	path = copy + consumed;
	while (*path == ' ' || *path == '\t')
		path++;
	path_len = strlen(path);
	if (path_len >= strlen(DELETED_SUFFIX) &&
	    strcmp(path + path_len - strlen(DELETED_SUFFIX), DELETED_SUFFIX) == 0) {
		entry->deleted = true;
		path_len -= strlen(DELETED_SUFFIX);
		path[path_len] = '\0';
	}
	entry->path = strdup(path_len ? path : "[anon]");
	if (!entry->path)
		ret = -ENOMEM;
out:
	free(copy);
	return ret;
}

static int compare_entries(const void *a, const void *b)
{
	const struct proc_map_entry *x = a, *y = b;

	if (x->start != y->start)
		return x->start < y->start ? -1 : 1;
	return 0;
}

int proc_maps__parse(const char *text, size_t len, struct proc_maps **out)
{
	struct proc_maps *maps;
	size_t capacity = 0;
	const char *line = text, *end = text + len;
	int ret = 0;

	*out = NULL;
	maps = calloc(1, sizeof(*maps));
	if (!maps)
		return -ENOMEM;

	while (line < end) {
		const char *newline = memchr(line, '\n', end - line);
		size_t line_len = newline ? (size_t)(newline - line) : (size_t)(end - line);

		if (line_len == 0) {
			line += 1;
			continue;
		}
		if (array_grow((void **)&maps->entries, &capacity, maps->count,
			       sizeof(*maps->entries), 64)) {
			ret = -ENOMEM;
			goto err;
		}
		ret = parse_line(line, line_len, &maps->entries[maps->count]);
		if (ret)
			goto err;
		maps->count++;
		line += line_len + (newline ? 1 : 0);
	}

	/* The kernel prints in address order; sorting keeps hand-made input correct too. */
	if (maps->count)
		qsort(maps->entries, maps->count, sizeof(*maps->entries), compare_entries);
	*out = maps;
	return 0;
err:
	proc_maps__free(maps);
	return ret;
}

/* /proc/PID/maps of a process at vm.max_map_count (65530 by default) is a few MiB. */
#define MAPS_MAX_BYTES (256u << 20)

static int read_whole_file(int fd, char **text, size_t *len)
{
	struct dynbuf b;
	int ret;

	dynbuf_init(&b, MAPS_MAX_BYTES);
	ret = small_file_read_all(fd, &b);
	if (ret) {
		dynbuf_free(&b);
		return ret;
	}
	*text = dynbuf_take(&b, len);
	return 0;
}

int proc_maps__read(pid_t pid, struct proc_maps **out)
{
	char path[64];
	char *text = NULL;
	size_t len = 0;
	int fd, ret;

	*out = NULL;
	if (pid <= 0)
		return -ESRCH;
	snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		return ret == -ENOENT ? -ESRCH : ret;
	}
	ret = read_whole_file(fd, &text, &len);
	close(fd);
	if (ret)
		return ret == -ENOENT ? -ESRCH : ret;

	ret = proc_maps__parse(text, len, out);
	free(text);
	if (ret)
		return ret;
	/* A process between exit and reaping still has a /proc entry but no mm: an empty
	 * snapshot would make every later lookup fail silently, so say it is gone. */
	if ((*out)->count == 0) {
		proc_maps__free(*out);
		*out = NULL;
		return -ESRCH;
	}
	return 0;
}

size_t proc_maps__count(const struct proc_maps *maps)
{
	return maps ? maps->count : 0;
}

const struct proc_map_entry *proc_maps__entry(const struct proc_maps *maps, size_t i)
{
	if (!maps || i >= maps->count)
		return NULL;
	return &maps->entries[i];
}

const struct proc_map_entry *proc_maps__find(const struct proc_maps *maps, uint64_t addr)
{
	size_t lo = 0, hi;

	if (!maps)
		return NULL;
	/* Find the last entry whose start <= addr. */
	hi = maps->count;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (maps->entries[mid].start <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0)
		return NULL;
	if (addr < maps->entries[lo - 1].end)
		return &maps->entries[lo - 1];
	return NULL;
}

bool proc_map_entry__is_file(const struct proc_map_entry *entry)
{
	return entry && entry->inode != 0 && entry->path && entry->path[0] == '/';
}
