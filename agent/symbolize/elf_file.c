/* ELF files through libelf: build id, program headers, function lookup by name (for the attach
 * stage) and by address (for symbolization), and the separate debug file that provides names
 * and DWARF when distributions strip them. Files are mapped with ELF_C_READ_MMAP and kept
 * open, so a parsed file keeps working after it is deleted or replaced on disk and after the
 * processes that mapped it exit. The address table and the DWARF are loaded lazily: the
 * attach stage never needs them. Source lines come from dwarf_lines; this file decides which
 * image holds the DWARF and finds dwz supplementary files, and falls back to the symbol
 * tables (demangled) where DWARF has nothing to say. */
#include "symbolize/elf_file.h"

#include <errno.h>
#include <fcntl.h>
#include <gelf.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "symbolize/demangle.h"

#ifndef NT_GNU_BUILD_ID
#define NT_GNU_BUILD_ID 3
#endif

/* One opened ELF: the main file or its separate debug file. */
struct elf_image {
	Elf *elf; /* NULL when not open */
	char *path;
	size_t shstrndx;
};

struct func_entry {
	uint64_t start;
	uint64_t end; /* one past the last byte */
	const char *name;
	const char *readable; /* demangled name, or name; NULL until first asked for */
};

/* A function symbol gathered while building the address table. */
struct func_candidate {
	uint64_t start;
	uint64_t size;
	uint64_t section_end;
	const char *name;
	int bind_rank;
};

enum dwarf_state { DWARF_UNTRIED, DWARF_READY, DWARF_NONE };

struct elf_file {
	struct elf_image main;
	struct elf_image debug;	  /* found locally; elf NULL when there is none */
	struct elf_image fetched; /* handed in by elf_file__use_debug_file (debuginfod) */
	struct elf_image alt;	  /* dwz supplementary file of the DWARF image */
	GElf_Ehdr ehdr;
	GElf_Phdr *phdrs;
	size_t phnum;
	char *build_id;

	bool table_built;
	struct func_entry *funcs;
	size_t func_count;

	/* Names made here (version suffixes stripped, demangled), freed with the file. */
	char **owned_names;
	size_t owned_count, owned_capacity;

	enum dwarf_state dwarf_state;
	struct dwarf_lines *dwarf; /* of the first of main, debug, fetched with .debug_info */
	/* The DWARF as read before its supplementary file arrived: kept for the strings it
	 * handed out. */
	struct dwarf_lines *retired_dwarf;
	const struct elf_image *dwarf_image;
	const char *missing_alt_build_id; /* owned by dwarf */
	struct source_line *lines;	  /* elf_file__lines_at's answer */
	size_t lines_capacity;
};

#define DEFAULT_DEBUG_ROOT "/usr/lib/debug"

static const char *const default_debug_roots[] = {DEFAULT_DEBUG_ROOT, NULL};
static char **custom_debug_roots;
static bool custom_debug_roots_set;

static const char *const *debug_roots(void)
{
	if (custom_debug_roots_set)
		return (const char *const *)custom_debug_roots;
	return default_debug_roots;
}

static void free_string_array(char **strings)
{
	size_t i;

	if (!strings)
		return;
	for (i = 0; strings[i]; i++)
		free(strings[i]);
	free(strings);
}

int elf_file__set_debug_roots(const char *const *dirs)
{
	char **copy;
	size_t count = 0, i;

	if (!dirs) {
		free_string_array(custom_debug_roots);
		custom_debug_roots = NULL;
		custom_debug_roots_set = false;
		return 0;
	}
	while (dirs[count])
		count++;
	copy = calloc(count + 1, sizeof(*copy));
	if (!copy)
		return -ENOMEM;
	for (i = 0; i < count; i++) {
		copy[i] = strdup(dirs[i]);
		if (!copy[i]) {
			free_string_array(copy);
			return -ENOMEM;
		}
	}
	free_string_array(custom_debug_roots);
	custom_debug_roots = copy;
	custom_debug_roots_set = true;
	return 0;
}

static void image_close(struct elf_image *img)
{
	if (img->elf)
		elf_end(img->elf);
	free(img->path);
	img->elf = NULL;
	img->path = NULL;
}

static int image_open(const char *path, struct elf_image *img)
{
	struct stat st;
	int fd, ret;

	img->elf = NULL;
	img->path = NULL;
	img->shstrndx = SHN_UNDEF;

	if (elf_version(EV_CURRENT) == EV_NONE)
		return -ENOTSUP;
	/* O_NONBLOCK: a FIFO where a file should be (a target writes the directories its
	 * binaries and debug links point into) must not block the open. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return -errno;
	/* libelf would call a directory or a device "not ELF"; say what it really is. */
	if (fstat(fd, &st) != 0) {
		ret = -errno;
		goto err;
	}
	if (!S_ISREG(st.st_mode)) {
		ret = S_ISDIR(st.st_mode) ? -EISDIR : -ENOEXEC;
		goto err;
	}
	img->path = strdup(path);
	if (!img->path) {
		ret = -ENOMEM;
		goto err;
	}
	img->elf = elf_begin(fd, ELF_C_READ_MMAP, NULL);
	if (!img->elf || elf_kind(img->elf) != ELF_K_ELF) {
		ret = -ENOEXEC;
		goto err;
	}
	/* Pull the whole file in (with READ_MMAP that is the mapping libelf already made) and
	 * let go of the descriptor: a daemon may hold thousands of files, and the mapping
	 * keeps a deleted or replaced file readable just as well. */
	if (elf_cntl(img->elf, ELF_C_FDREAD) != 0) {
		ret = -EIO;
		goto err;
	}
	close(fd);
	/* A file without section headers (rare, but legal) has no names to offer; its
	 * program headers still map addresses, so that is not an error. */
	if (elf_getshdrstrndx(img->elf, &img->shstrndx) != 0)
		img->shstrndx = SHN_UNDEF;
	return 0;
err:
	close(fd);
	image_close(img);
	return ret;
}

static Elf_Scn *find_section_by_type(const struct elf_image *img, Elf64_Word type, GElf_Shdr *shdr)
{
	Elf_Scn *scn = NULL;

	if (!img->elf)
		return NULL;
	while ((scn = elf_nextscn(img->elf, scn)) != NULL) {
		if (gelf_getshdr(scn, shdr) && shdr->sh_type == type)
			return scn;
	}
	return NULL;
}

static Elf_Scn *find_section_by_name(const struct elf_image *img, const char *name, GElf_Shdr *shdr)
{
	Elf_Scn *scn = NULL;

	if (!img->elf || img->shstrndx == SHN_UNDEF)
		return NULL;
	while ((scn = elf_nextscn(img->elf, scn)) != NULL) {
		const char *scn_name;

		if (!gelf_getshdr(scn, shdr))
			continue;
		scn_name = elf_strptr(img->elf, img->shstrndx, shdr->sh_name);
		if (scn_name && strcmp(scn_name, name) == 0)
			return scn;
	}
	return NULL;
}

static bool image_has_symtab(const struct elf_image *img)
{
	GElf_Shdr shdr;
	Elf_Scn *scn = find_section_by_type(img, SHT_SYMTAB, &shdr);

	return scn && shdr.sh_size > 0 && shdr.sh_entsize > 0;
}

static bool image_has_debug_info(const struct elf_image *img)
{
	GElf_Shdr shdr;
	Elf_Scn *scn = find_section_by_name(img, ".debug_info", &shdr);

	if (!scn)
		scn = find_section_by_name(img, ".zdebug_info", &shdr);
	return scn && shdr.sh_type != SHT_NOBITS && shdr.sh_size > 0;
}

/* What a debug file is for: names (.symtab) or DWARF. */
static bool image_is_useful_debug_file(const struct elf_image *img)
{
	return image_has_symtab(img) || image_has_debug_info(img);
}

/* Returns the build id note's descriptor found in data, or NULL. */
static const unsigned char *note_build_id(Elf_Data *data, size_t *len)
{
	size_t offset = 0, name_offset, desc_offset;
	GElf_Nhdr nhdr;

	while ((offset = gelf_getnote(data, offset, &nhdr, &name_offset, &desc_offset)) > 0) {
		const char *note_name = (const char *)data->d_buf + name_offset;

		if (nhdr.n_type == NT_GNU_BUILD_ID && nhdr.n_namesz == 4 &&
		    memcmp(note_name, "GNU", 4) == 0 && nhdr.n_descsz > 0) {
			*len = nhdr.n_descsz;
			return (const unsigned char *)data->d_buf + desc_offset;
		}
	}
	return NULL;
}

/* Lowercase hex of the build id in *out (NULL when none). 0 or -ENOMEM. */
static int image_build_id(const struct elf_image *img, char **out)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *desc = NULL;
	size_t len = 0, i, phnum;
	Elf_Scn *scn = NULL;
	GElf_Shdr shdr;
	char *text;

	*out = NULL;
	while (!desc && (scn = elf_nextscn(img->elf, scn)) != NULL) {
		Elf_Data *data;

		if (!gelf_getshdr(scn, &shdr) || shdr.sh_type != SHT_NOTE)
			continue;
		data = elf_getdata(scn, NULL);
		if (data && data->d_buf)
			desc = note_build_id(data, &len);
	}
	/* Files with no section headers still carry the note in a PT_NOTE segment. */
	if (!desc && elf_getphdrnum(img->elf, &phnum) == 0) {
		for (i = 0; i < phnum && !desc; i++) {
			GElf_Phdr phdr;
			Elf_Data *data;

			if (!gelf_getphdr(img->elf, i, &phdr) || phdr.p_type != PT_NOTE)
				continue;
			data = elf_getdata_rawchunk(img->elf, phdr.p_offset, phdr.p_filesz,
						    ELF_T_NHDR);
			if (data && data->d_buf)
				desc = note_build_id(data, &len);
		}
	}
	if (!desc)
		return 0;

	text = malloc(len * 2 + 1);
	if (!text)
		return -ENOMEM;
	for (i = 0; i < len; i++) {
		text[2 * i] = hex[desc[i] >> 4];
		text[2 * i + 1] = hex[desc[i] & 0xf];
	}
	text[2 * len] = '\0';
	*out = text;
	return 0;
}

/* "/proc/123/root" when path lies inside another process's root (a container), so debug
 * files are looked for in the same file system; length 0 otherwise. */
static size_t sysroot_prefix_len(const char *path)
{
	const char *p;

	if (strncmp(path, "/proc/", 6) != 0)
		return 0;
	p = path + 6;
	if (*p < '0' || *p > '9')
		return 0;
	while (*p >= '0' && *p <= '9')
		p++;
	if (strncmp(p, "/root/", 6) != 0)
		return 0;
	return (size_t)(p + 5 - path);
}

/* Opens candidate into img when it carries the build id want; with need_content, only when it
 * also has names or DWARF. 0, -errno from opening, -EINVAL when it is another file. */
static int open_with_build_id(const char *candidate, const char *want, bool need_content,
			      struct elf_image *img)
{
	char *candidate_id = NULL;
	int ret;

	ret = image_open(candidate, img);
	if (ret)
		return ret;
	ret = image_build_id(img, &candidate_id);
	if (!ret && (!candidate_id || strcmp(candidate_id, want) != 0 ||
		     (need_content && !image_is_useful_debug_file(img))))
		ret = -EINVAL;
	free(candidate_id);
	if (ret)
		image_close(img);
	return ret;
}

/* Opens candidate as the debug image when it carries the wanted build id and names or
 * DWARF. */
static bool try_debug_by_build_id(struct elf_file *f, const char *candidate)
{
	return open_with_build_id(candidate, f->build_id, true, &f->debug) == 0;
}

static int find_debug_by_build_id(struct elf_file *f)
{
	const char *const *roots = debug_roots();
	size_t prefix_len = sysroot_prefix_len(f->main.path);
	char candidate[PATH_MAX];
	size_t i;
	int pass;

	if (!f->build_id || strlen(f->build_id) < 3)
		return -ENOENT;
	/* Inside the container's root first: its debug packages match its binaries. */
	for (pass = prefix_len ? 0 : 1; pass < 2; pass++) {
		for (i = 0; roots[i]; i++) {
			int n =
			    snprintf(candidate, sizeof(candidate), "%.*s%s/.build-id/%.2s/%s.debug",
				     pass == 0 ? (int)prefix_len : 0, f->main.path, roots[i],
				     f->build_id, f->build_id + 2);

			if (n <= 0 || (size_t)n >= sizeof(candidate))
				continue;
			if (try_debug_by_build_id(f, candidate))
				return 0;
		}
	}
	return -ENOENT;
}

static int file_crc32(const char *path, uint32_t *crc_out)
{
	unsigned char buf[64 * 1024];
	uLong crc = crc32(0L, Z_NULL, 0);
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	struct stat st;
	int ret = 0;

	if (fd < 0)
		return -errno;
	/* Only a regular file can be a debug file: a FIFO would block, /dev/zero never end. */
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return -EINVAL;
	}
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));

		if (n < 0) {
			if (errno == EINTR)
				continue;
			ret = -errno;
			break;
		}
		if (n == 0)
			break;
		crc = crc32(crc, buf, (uInt)n);
	}
	close(fd);
	*crc_out = (uint32_t)crc;
	return ret;
}

static bool try_debug_by_link(struct elf_file *f, const char *candidate, uint32_t want_crc)
{
	uint32_t crc;

	/* The link may name the stripped file itself (same directory, same name). */
	if (strcmp(candidate, f->main.path) == 0)
		return false;
	if (file_crc32(candidate, &crc) != 0 || crc != want_crc)
		return false;
	if (image_open(candidate, &f->debug) != 0)
		return false;
	if (!image_is_useful_debug_file(&f->debug)) {
		image_close(&f->debug);
		return false;
	}
	return true;
}

static uint32_t read_u32(const struct elf_file *f, const unsigned char *p)
{
	if (f->ehdr.e_ident[EI_DATA] == ELFDATA2MSB)
		return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
	return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

static int find_debug_by_link(struct elf_file *f)
{
	const char *const *roots = debug_roots();
	size_t prefix_len = sysroot_prefix_len(f->main.path);
	const char *path = f->main.path, *slash;
	char candidate[PATH_MAX];
	const char *link;
	size_t link_len, crc_offset, dir_len, i;
	uint32_t want_crc;
	GElf_Shdr shdr;
	Elf_Scn *scn;
	Elf_Data *data;
	int n, pass;

	scn = find_section_by_name(&f->main, ".gnu_debuglink", &shdr);
	if (!scn)
		return -ENOENT;
	data = elf_getdata(scn, NULL);
	if (!data || !data->d_buf || data->d_size < 6)
		return -ENOENT;
	link = data->d_buf;
	link_len = strnlen(link, data->d_size);
	crc_offset = (link_len + 1 + 3) & ~(size_t)3;
	if (link_len == 0 || crc_offset + 4 > data->d_size || strchr(link, '/'))
		return -ENOENT;
	want_crc = read_u32(f, (const unsigned char *)data->d_buf + crc_offset);

	slash = strrchr(path, '/');
	dir_len = slash ? (size_t)(slash - path) : 0;

	n = snprintf(candidate, sizeof(candidate), "%.*s/%s", (int)dir_len, path, link);
	if (n > 0 && (size_t)n < sizeof(candidate) && try_debug_by_link(f, candidate, want_crc))
		return 0;
	n = snprintf(candidate, sizeof(candidate), "%.*s/.debug/%s", (int)dir_len, path, link);
	if (n > 0 && (size_t)n < sizeof(candidate) && try_debug_by_link(f, candidate, want_crc))
		return 0;
	if (dir_len < prefix_len)
		return -ENOENT;
	for (pass = prefix_len ? 0 : 1; pass < 2; pass++) {
		for (i = 0; roots[i]; i++) {
			/* <sysroot><root><dir inside the sysroot>/<link> */
			n = snprintf(candidate, sizeof(candidate), "%.*s%s%.*s/%s",
				     pass == 0 ? (int)prefix_len : 0, path, roots[i],
				     (int)(dir_len - prefix_len), path + prefix_len, link);
			if (n <= 0 || (size_t)n >= sizeof(candidate))
				continue;
			if (try_debug_by_link(f, candidate, want_crc))
				return 0;
		}
	}
	return -ENOENT;
}

void elf_file__free(struct elf_file *f)
{
	size_t i;

	if (!f)
		return;
	/* DWARF first: it reads from the images. */
	dwarf_lines__free(f->dwarf);
	dwarf_lines__free(f->retired_dwarf);
	free(f->lines);
	image_close(&f->main);
	image_close(&f->debug);
	image_close(&f->fetched);
	image_close(&f->alt);
	free(f->phdrs);
	free(f->build_id);
	free(f->funcs);
	for (i = 0; i < f->owned_count; i++)
		free(f->owned_names[i]);
	free(f->owned_names);
	free(f);
}

int elf_file__open(const char *path, struct elf_file **out)
{
	struct elf_file *f;
	size_t i;
	int ret;

	*out = NULL;
	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;

	ret = image_open(path, &f->main);
	if (ret)
		goto err;
	if (!gelf_getehdr(f->main.elf, &f->ehdr)) {
		ret = -ENOEXEC;
		goto err;
	}
	if (elf_getphdrnum(f->main.elf, &f->phnum) != 0) {
		ret = -ENOEXEC;
		goto err;
	}
	if (f->phnum) {
		f->phdrs = calloc(f->phnum, sizeof(*f->phdrs));
		if (!f->phdrs) {
			ret = -ENOMEM;
			goto err;
		}
		for (i = 0; i < f->phnum; i++) {
			if (!gelf_getphdr(f->main.elf, i, &f->phdrs[i])) {
				ret = -ENOEXEC;
				goto err;
			}
		}
	}
	ret = image_build_id(&f->main, &f->build_id);
	if (ret)
		goto err;

	/* A file with both .symtab and DWARF has everything already; a stripped one (or one
	 * built without -g) may have a debug file with what it lacks. */
	if ((!image_has_symtab(&f->main) || !image_has_debug_info(&f->main)) &&
	    find_debug_by_build_id(f) != 0)
		find_debug_by_link(f);

	*out = f;
	return 0;
err:
	elf_file__free(f);
	return ret;
}

const char *elf_file__build_id(const struct elf_file *f)
{
	return f ? f->build_id : NULL;
}

bool elf_file__is_shared_object(const struct elf_file *f)
{
	return f && f->ehdr.e_type == ET_DYN;
}

const char *elf_file__path(const struct elf_file *f)
{
	return f ? f->main.path : NULL;
}

const char *elf_file__debug_file_path(const struct elf_file *f)
{
	if (f && f->fetched.elf)
		return f->fetched.path;
	return f && f->debug.elf ? f->debug.path : NULL;
}

/* A symbol table ready to iterate. */
struct symtab {
	Elf *elf;
	Elf_Data *syms;
	Elf_Data *versyms; /* .gnu.version, only for .dynsym; may be NULL */
	size_t count;
	size_t strndx;
};

static int symtab_open(const struct elf_image *img, Elf64_Word type, struct symtab *tab)
{
	GElf_Shdr shdr, vshdr;
	Elf_Scn *scn, *vscn;

	memset(tab, 0, sizeof(*tab));
	scn = find_section_by_type(img, type, &shdr);
	if (!scn || shdr.sh_entsize == 0 || shdr.sh_type == SHT_NOBITS)
		return -ENOENT;
	tab->syms = elf_getdata(scn, NULL);
	if (!tab->syms)
		return -ENOENT;
	tab->elf = img->elf;
	tab->count = shdr.sh_size / shdr.sh_entsize;
	tab->strndx = shdr.sh_link;
	if (type == SHT_DYNSYM) {
		vscn = find_section_by_type(img, SHT_GNU_versym, &vshdr);
		if (vscn)
			tab->versyms = elf_getdata(vscn, NULL);
	}
	return 0;
}

/* The i-th symbol when it is a defined function; its name through *name. */
static bool symtab_function(const struct symtab *tab, size_t i, GElf_Sym *sym, const char **name)
{
	int type;

	if (!gelf_getsym(tab->syms, (int)i, sym))
		return false;
	type = GELF_ST_TYPE(sym->st_info);
	if (type != STT_FUNC && type != STT_GNU_IFUNC)
		return false;
	if (sym->st_shndx == SHN_UNDEF || sym->st_value == 0)
		return false;
	*name = elf_strptr(tab->elf, tab->strndx, sym->st_name);
	return *name && **name;
}

/* How well name matches want: 0 no, 1 a non-default version, 2 the default or unversioned. */
static int name_match_rank(const struct symtab *tab, size_t i, const char *name, const char *want)
{
	size_t want_len = strlen(want);
	GElf_Versym versym;

	if (strncmp(name, want, want_len) != 0)
		return 0;
	if (name[want_len] == '\0') {
		/* In .dynsym the version lives in .gnu.version; bit 15 marks a hidden
		 * (non-default) version such as memcpy@GLIBC_2.2.5 beside memcpy@@GLIBC_2.14. */
		if (tab->versyms && gelf_getversym(tab->versyms, (int)i, &versym) &&
		    (versym & 0x8000))
			return 1;
		return 2;
	}
	if (name[want_len] != '@')
		return 0;
	return name[want_len + 1] == '@' ? 2 : 1;
}

static int vaddr_to_offset(const struct elf_file *f, uint64_t vaddr, uint64_t *offset)
{
	size_t i;

	for (i = 0; i < f->phnum; i++) {
		const GElf_Phdr *ph = &f->phdrs[i];

		if (ph->p_type == PT_LOAD && vaddr >= ph->p_vaddr &&
		    vaddr - ph->p_vaddr < ph->p_filesz) {
			*offset = ph->p_offset + (vaddr - ph->p_vaddr);
			return 0;
		}
	}
	return -ENOEXEC;
}

int elf_file__find_function(struct elf_file *f, const char *name, struct elf_symbol *out)
{
	static const Elf64_Word types[3] = {SHT_DYNSYM, SHT_SYMTAB, SHT_SYMTAB};
	const struct elf_image *sources[3];
	size_t s, i;

	if (!f || !name || !out)
		return -EINVAL;
	sources[0] = &f->main;
	sources[1] = &f->main;
	sources[2] = &f->debug;
	for (s = 0; s < 3; s++) {
		struct symtab tab;
		GElf_Sym best_sym = {0};
		const char *best_name = NULL;
		int best_rank = 0;

		if (!sources[s]->elf || symtab_open(sources[s], types[s], &tab) != 0)
			continue;
		for (i = 0; i < tab.count && best_rank < 2; i++) {
			const char *sym_name;
			GElf_Sym sym;
			int rank;

			if (!symtab_function(&tab, i, &sym, &sym_name))
				continue;
			rank = name_match_rank(&tab, i, sym_name, name);
			if (rank > best_rank) {
				best_rank = rank;
				best_sym = sym;
				best_name = sym_name;
			}
		}
		if (best_name) {
			out->name = best_name;
			out->vaddr = best_sym.st_value;
			out->size = best_sym.st_size;
			return vaddr_to_offset(f, best_sym.st_value, &out->file_offset);
		}
	}
	return -ENOENT;
}

int elf_file__read_vaddr(struct elf_file *f, uint64_t vaddr, void *buf, size_t len)
{
	uint64_t offset = 0;
	bool found = false;
	size_t i, file_size = 0;
	const char *image;
	Elf_Scn *scn = NULL;
	GElf_Shdr shdr;

	if (!f || (!buf && len))
		return -EINVAL;
	for (i = 0; i < f->phnum && !found; i++) {
		const GElf_Phdr *ph = &f->phdrs[i];

		if (ph->p_type == PT_LOAD && vaddr >= ph->p_vaddr &&
		    vaddr - ph->p_vaddr < ph->p_filesz &&
		    len <= ph->p_filesz - (vaddr - ph->p_vaddr)) {
			offset = ph->p_offset + (vaddr - ph->p_vaddr);
			found = true;
		}
	}
	/* Without program headers (relocatable objects) the sections say where bytes are. */
	while (!found && (scn = elf_nextscn(f->main.elf, scn)) != NULL) {
		if (!gelf_getshdr(scn, &shdr) || shdr.sh_type == SHT_NOBITS ||
		    !(shdr.sh_flags & SHF_ALLOC))
			continue;
		if (vaddr >= shdr.sh_addr && vaddr - shdr.sh_addr < shdr.sh_size &&
		    len <= shdr.sh_size - (vaddr - shdr.sh_addr)) {
			offset = shdr.sh_offset + (vaddr - shdr.sh_addr);
			found = true;
		}
	}
	if (!found)
		return -ERANGE;

	image = elf_rawfile(f->main.elf, &file_size);
	if (!image)
		return -EIO;
	if (offset > file_size || len > file_size - offset)
		return -ERANGE;
	memcpy(buf, image + offset, len);
	return 0;
}

int elf_file__offset_to_vaddr(const struct elf_file *f, uint64_t file_offset, uint64_t *vaddr)
{
	size_t i;

	if (!f || !vaddr)
		return -EINVAL;
	for (i = 0; i < f->phnum; i++) {
		const GElf_Phdr *ph = &f->phdrs[i];

		if (ph->p_type == PT_LOAD && file_offset >= ph->p_offset &&
		    file_offset - ph->p_offset < ph->p_filesz) {
			*vaddr = ph->p_vaddr + (file_offset - ph->p_offset);
			return 0;
		}
	}
	return -ENOENT;
}

/* Hands copy (malloc'd) to f, which frees it with the file. NULL (copy freed) on -ENOMEM. */
static const char *own_name(struct elf_file *f, char *copy)
{
	if (!copy)
		return NULL;
	if (f->owned_count == f->owned_capacity) {
		size_t capacity = f->owned_capacity ? f->owned_capacity * 2 : 16;
		char **grown = realloc(f->owned_names, capacity * sizeof(*grown));

		if (!grown) {
			free(copy);
			return NULL;
		}
		f->owned_names = grown;
		f->owned_capacity = capacity;
	}
	f->owned_names[f->owned_count++] = copy;
	return copy;
}

/* Returns name without its version suffix; copies are owned by f. NULL on -ENOMEM. */
static const char *unversioned_name(struct elf_file *f, const char *name)
{
	const char *at = strchr(name, '@');

	if (!at || at == name)
		return name;
	return own_name(f, strndup(name, (size_t)(at - name)));
}

static int bind_rank(const GElf_Sym *sym)
{
	switch (GELF_ST_BIND(sym->st_info)) {
	case STB_GLOBAL:
	case STB_GNU_UNIQUE:
		return 3;
	case STB_WEAK:
		return 2;
	default:
		return 1;
	}
}

static size_t leading_underscores(const char *name)
{
	size_t n = 0;

	while (name[n] == '_')
		n++;
	return n;
}

/* Address order; at one address the preferred name first (see elf_file.h). */
static int compare_candidates(const void *a, const void *b)
{
	const struct func_candidate *x = a, *y = b;
	size_t ux, uy, lx, ly;

	if (x->start != y->start)
		return x->start < y->start ? -1 : 1;
	if ((x->bind_rank == 1) != (y->bind_rank == 1))
		return x->bind_rank == 1 ? 1 : -1;
	if ((x->size == 0) != (y->size == 0))
		return x->size == 0 ? 1 : -1;
	/* The public name before the implementation's, weak or not: glibc's calloc is a weak
	 * alias of the global __libc_calloc, malloc a global one of __libc_malloc. */
	ux = leading_underscores(x->name);
	uy = leading_underscores(y->name);
	if (ux != uy)
		return ux < uy ? -1 : 1;
	if (x->bind_rank != y->bind_rank)
		return y->bind_rank - x->bind_rank;
	lx = strlen(x->name);
	ly = strlen(y->name);
	if (lx != ly)
		return lx < ly ? -1 : 1;
	return strcmp(x->name, y->name);
}

static int collect_candidates(struct elf_file *f, const struct elf_image *img, Elf64_Word type,
			      struct func_candidate **cands, size_t *count, size_t *capacity)
{
	struct symtab tab;
	size_t i;

	if (!img->elf || symtab_open(img, type, &tab) != 0)
		return 0;
	for (i = 0; i < tab.count; i++) {
		struct func_candidate *c;
		const char *name;
		GElf_Shdr shdr;
		Elf_Scn *scn;
		GElf_Sym sym;

		if (!symtab_function(&tab, i, &sym, &name))
			continue;
		if (*count == *capacity) {
			size_t new_capacity = *capacity ? *capacity * 2 : 256;
			struct func_candidate *grown =
			    realloc(*cands, new_capacity * sizeof(*grown));

			if (!grown)
				return -ENOMEM;
			*cands = grown;
			*capacity = new_capacity;
		}
		c = &(*cands)[*count];
		c->name = unversioned_name(f, name);
		if (!c->name)
			return -ENOMEM;
		c->start = sym.st_value;
		c->size = sym.st_size;
		c->bind_rank = bind_rank(&sym);
		/* A size-0 symbol may grow to the next symbol, but never past its section. */
		c->section_end = UINT64_MAX;
		if (sym.st_shndx < SHN_LORESERVE) {
			scn = elf_getscn(img->elf, sym.st_shndx);
			if (scn && gelf_getshdr(scn, &shdr) && shdr.sh_addr <= sym.st_value)
				c->section_end = shdr.sh_addr + shdr.sh_size;
		}
		(*count)++;
	}
	return 0;
}

static int build_function_table(struct elf_file *f)
{
	struct func_candidate *cands = NULL;
	size_t count = 0, capacity = 0, i, j, n = 0;
	int ret;

	ret = collect_candidates(f, &f->main, SHT_SYMTAB, &cands, &count, &capacity);
	if (!ret)
		ret = collect_candidates(f, &f->main, SHT_DYNSYM, &cands, &count, &capacity);
	if (!ret)
		ret = collect_candidates(f, &f->debug, SHT_SYMTAB, &cands, &count, &capacity);
	if (!ret)
		ret = collect_candidates(f, &f->fetched, SHT_SYMTAB, &cands, &count, &capacity);
	if (ret)
		goto out;
	if (count == 0) {
		f->table_built = true;
		goto out;
	}
	qsort(cands, count, sizeof(*cands), compare_candidates);

	f->funcs = calloc(count, sizeof(*f->funcs));
	if (!f->funcs) {
		ret = -ENOMEM;
		goto out;
	}
	/* One entry per address: the first candidate of each run is the preferred name; the
	 * extent is the largest any alias claims. */
	for (i = 0; i < count; i = j) {
		uint64_t size = 0, section_end = cands[i].section_end;

		for (j = i; j < count && cands[j].start == cands[i].start; j++) {
			if (cands[j].size > size)
				size = cands[j].size;
		}
		f->funcs[n].start = cands[i].start;
		f->funcs[n].name = cands[i].name;
		f->funcs[n].readable = NULL;
		if (size) {
			f->funcs[n].end = cands[i].start + size;
		} else {
			uint64_t next = j < count ? cands[j].start : UINT64_MAX;

			f->funcs[n].end = next < section_end ? next : section_end;
			if (f->funcs[n].end == UINT64_MAX || f->funcs[n].end <= cands[i].start)
				f->funcs[n].end = cands[i].start + 1;
		}
		n++;
	}
	f->func_count = n;
	f->table_built = true;
out:
	free(cands);
	return ret;
}

/* How far back to look for a function that encloses a smaller symbol inside it. */
#define ENCLOSING_SCAN 8

static struct func_entry *function_entry_at(struct elf_file *f, uint64_t vaddr)
{
	size_t lo = 0, hi, k;

	if (!f->table_built && build_function_table(f) != 0) {
		/* Out of memory: leave the table unbuilt so a later call can retry. */
		free(f->funcs);
		f->funcs = NULL;
		f->func_count = 0;
		return NULL;
	}
	hi = f->func_count;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (f->funcs[mid].start <= vaddr)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (k = 0; k < ENCLOSING_SCAN && k < lo; k++) {
		struct func_entry *e = &f->funcs[lo - 1 - k];

		if (vaddr < e->end)
			return e;
	}
	return NULL;
}

const char *elf_file__function_at(struct elf_file *f, uint64_t vaddr, uint64_t *func_start)
{
	const struct func_entry *e;

	if (!f)
		return NULL;
	e = function_entry_at(f, vaddr);
	if (!e)
		return NULL;
	if (func_start)
		*func_start = e->start;
	return e->name;
}

/* The readable (demangled) name of a symbol-table entry, made once; the symbol's own name when
 * it is not mangled (or memory ran out). */
static const char *entry_readable_name(struct elf_file *f, struct func_entry *e)
{
	if (!e->readable) {
		char *demangled = demangle__readable(e->name);
		const char *owned = demangled ? own_name(f, demangled) : NULL;

		e->readable = owned ? owned : e->name;
	}
	return e->readable;
}

/* Looks for the dwz supplementary file the DWARF refers to, as the container sees it first:
 * the recorded path (absolute, or relative to the DWARF file), then the build-id trees. Each
 * candidate must carry the recorded build id. */
static void find_alt_file(struct elf_file *f)
{
	const char *const *roots = debug_roots();
	size_t prefix_len = sysroot_prefix_len(f->main.path);
	const char *dwarf_path = f->dwarf_image->path, *alt_path, *alt_id, *slash;
	char candidate[PATH_MAX];
	size_t i;
	int n, pass;

	if (dwarf_lines__alt_link(f->dwarf, &alt_path, &alt_id) != 0)
		return;
	f->missing_alt_build_id = alt_id;
	for (pass = prefix_len ? 0 : 1; pass < 2; pass++) {
		int sysroot_len = pass == 0 ? (int)prefix_len : 0;

		if (alt_path[0] == '/') {
			n = snprintf(candidate, sizeof(candidate), "%.*s%s", sysroot_len,
				     f->main.path, alt_path);
		} else if (pass == 0) {
			n = 0; /* relative to the DWARF file: one place, tried in the last pass */
		} else {
			slash = strrchr(dwarf_path, '/');
			n = snprintf(candidate, sizeof(candidate), "%.*s/%s",
				     slash ? (int)(slash - dwarf_path) : 1,
				     slash ? dwarf_path : ".", alt_path);
		}
		if (n > 0 && (size_t)n < sizeof(candidate) &&
		    open_with_build_id(candidate, alt_id, false, &f->alt) == 0)
			break;
		for (i = 0; roots[i] && strlen(alt_id) > 2; i++) {
			n = snprintf(candidate, sizeof(candidate), "%.*s%s/.build-id/%.2s/%s.debug",
				     sysroot_len, f->main.path, roots[i], alt_id, alt_id + 2);
			if (n > 0 && (size_t)n < sizeof(candidate) &&
			    open_with_build_id(candidate, alt_id, false, &f->alt) == 0)
				break;
		}
		if (f->alt.elf)
			break;
	}
	if (f->alt.elf && dwarf_lines__set_alt(f->dwarf, f->alt.elf) == 0)
		f->missing_alt_build_id = NULL;
	else
		image_close(&f->alt);
}

/* Opens the DWARF on first need. Only -ENOMEM is an error; no DWARF is a state. */
static int ensure_dwarf(struct elf_file *f)
{
	const struct elf_image *images[3] = {&f->main, &f->debug, &f->fetched};
	size_t i;
	int ret;

	if (f->dwarf_state != DWARF_UNTRIED)
		return 0;
	f->dwarf_state = DWARF_NONE;
	for (i = 0; i < 3; i++) {
		if (images[i]->elf && image_has_debug_info(images[i]))
			break;
	}
	if (i == 3)
		return 0;
	ret = dwarf_lines__new(images[i]->elf, &f->dwarf);
	if (ret == -ENOMEM) {
		f->dwarf_state = DWARF_UNTRIED;
		return ret;
	}
	if (ret)
		return 0;
	f->dwarf_image = images[i];
	f->dwarf_state = DWARF_READY;
	find_alt_file(f);
	return 0;
}

bool elf_file__has_dwarf(struct elf_file *f)
{
	return f && ensure_dwarf(f) == 0 && f->dwarf_state == DWARF_READY;
}

bool elf_file__has_line_table(struct elf_file *f)
{
	return elf_file__has_dwarf(f) && dwarf_lines__has_line_table(f->dwarf);
}

int elf_file__use_debug_file(struct elf_file *f, const char *path)
{
	int ret;

	if (!f || !path)
		return -EINVAL;
	if (!f->build_id)
		return -ENOENT;
	ret = ensure_dwarf(f);
	if (ret)
		return ret;
	if (f->dwarf_state == DWARF_READY || f->fetched.elf)
		return -EEXIST;
	ret = open_with_build_id(path, f->build_id, true, &f->fetched);
	if (ret)
		return ret;
	/* Names from its .symtab join the table on the next lookup; earlier answers stay
	 * valid (their strings live in images that stay open). */
	free(f->funcs);
	f->funcs = NULL;
	f->func_count = 0;
	f->table_built = false;
	f->dwarf_state = DWARF_UNTRIED;
	return 0;
}

const char *elf_file__missing_alt_build_id(struct elf_file *f)
{
	if (!f || ensure_dwarf(f) != 0)
		return NULL;
	return f->missing_alt_build_id;
}

int elf_file__use_alt_file(struct elf_file *f, const char *path)
{
	struct dwarf_lines *fresh = NULL;
	int ret;

	if (!f || !path)
		return -EINVAL;
	if (!elf_file__missing_alt_build_id(f))
		return -EEXIST;
	ret = open_with_build_id(path, f->missing_alt_build_id, false, &f->alt);
	if (ret)
		return ret;
	/* Lookups made without it cached what they could not name: start over from a fresh
	 * reading of the same DWARF. */
	ret = dwarf_lines__new(f->dwarf_image->elf, &fresh);
	if (!ret)
		ret = dwarf_lines__set_alt(fresh, f->alt.elf);
	if (ret) {
		dwarf_lines__free(fresh);
		image_close(&f->alt);
		return ret;
	}
	f->retired_dwarf = f->dwarf;
	f->dwarf = fresh;
	f->missing_alt_build_id = NULL;
	return 0;
}

/* DWARF's answer at vaddr into f->lines: the line count, 0 when DWARF has none. */
static int dwarf_lines_at(struct elf_file *f, uint64_t vaddr, uint64_t *entry, size_t *count)
{
	struct source_line *grown;
	int ret;

	*count = 0;
	if (f->dwarf_state != DWARF_READY)
		return 0;
	for (;;) {
		ret =
		    dwarf_lines__lookup(f->dwarf, vaddr, f->lines, f->lines_capacity, count, entry);
		if (ret != -E2BIG)
			break;
		/* A deeper inline chain than the buffer holds: grow to fit and ask again. */
		grown = realloc(f->lines, (*count + 8) * sizeof(*grown));
		if (!grown)
			return -ENOMEM;
		f->lines = grown;
		f->lines_capacity = *count + 8;
	}
	if (ret == -ENOMEM)
		return ret;
	if (ret)
		*count = 0;
	return 0;
}

int elf_file__lines_at(struct elf_file *f, uint64_t vaddr, const struct source_line **lines,
		       size_t *count, uint64_t *func_start)
{
	struct func_entry *sym;
	struct source_line *outer;
	uint64_t entry = 0;
	size_t n = 0;
	int ret;

	if (!f || !lines || !count)
		return -EINVAL;
	*lines = NULL;
	*count = 0;
	if (!f->lines) {
		f->lines = calloc(16, sizeof(*f->lines));
		if (!f->lines)
			return -ENOMEM;
		f->lines_capacity = 16;
	}
	ret = ensure_dwarf(f);
	if (!ret)
		ret = dwarf_lines_at(f, vaddr, &entry, &n);
	if (ret)
		return ret;
	sym = function_entry_at(f, vaddr);
	if (n) {
		outer = &f->lines[n - 1];
		/* The symbol at the function's entry names it as the linker and the user know
		 * it: the public alias rather than the definition's internal name (malloc, not
		 * __libc_malloc), the qualified C++ name where DWARF has only the bare one
		 * (internal linkage), the clone (f.constprop.0) that really runs. A symbol that
		 * starts elsewhere (f.cold) names a part of the function DWARF names whole. */
		if (sym && (!outer->function || sym->start == entry)) {
			outer->function = entry_readable_name(f, sym);
			outer->system_name = sym->name;
			entry = sym->start;
		}
		if (!outer->function)
			return 0;
		if (func_start)
			*func_start = entry;
	} else if (sym) {
		f->lines[0] = (struct source_line){.function = entry_readable_name(f, sym),
						   .system_name = sym->name};
		if (func_start)
			*func_start = sym->start;
		n = 1;
	}
	*lines = f->lines;
	*count = n;
	return 0;
}
