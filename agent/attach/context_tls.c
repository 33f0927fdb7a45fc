/* Finding a process's request-context TLS pointers (see context_tls.h): symbols in .dynsym
 * and .symtab, the TLS segment, the GOT slots the loader filled (read from /proc/PID/mem). */
#include <errno.h>
#include <fcntl.h>
#include <gelf.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "attach/context_tls.h"
#include "elf/mapped_elf.h"
#include "symbolize/proc_maps.h"

#ifndef R_X86_64_TLSDESC
#define R_X86_64_TLSDESC 36
#endif

/* The names each ABI exports, in the order they are looked for. */
static const char *const otel_names[] = { "otel_thread_ctx_v1", "custom_labels_current_set_v2" };
static const char *const labels_name = "custom_labels_current_set";
static const char *const labels_version_name = "custom_labels_abi_version";

/* A TLS offset from the thread pointer more negative than this is not a static offset. */
#define STATIC_TLS_MAX (1ll << 32)

long long context_tls_static_offset(unsigned long long st_value, unsigned long long memsz,
				    unsigned long long align)
{
	unsigned long long block = align > 1 ? (memsz + align - 1) / align * align : memsz;

	return (long long)st_value - (long long)block;
}

static int read_mem(int mem_fd, uint64_t addr, void *buf, size_t len)
{
	ssize_t n = pread(mem_fd, buf, len, (off_t)addr);

	if (n == (ssize_t)len)
		return 0;
	return n < 0 ? -errno : -EIO;
}

struct tls_symbol {
	bool found;
	size_t index;       /* in .dynsym, or SIZE_MAX when only in .symtab */
	uint64_t value;     /* st_value: offset in the module's TLS block */
	uint64_t address;   /* STT_OBJECT symbols (the ABI version): vaddr */
};

/* Looks name up in a symbol table section; TLS symbols only unless want_object. */
static void find_in_symtab(Elf *elf, Elf_Scn *scn, const GElf_Shdr *shdr, const char *name,
			   bool want_object, bool dynamic, struct tls_symbol *out)
{
	Elf_Data *data = elf_getdata(scn, NULL);
	size_t n = shdr->sh_entsize ? shdr->sh_size / shdr->sh_entsize : 0;
	GElf_Sym sym;

	if (!data)
		return;
	for (size_t i = 1; i < n; i++) {
		const char *sym_name;

		if (!gelf_getsym(data, (int)i, &sym) || sym.st_shndx == SHN_UNDEF)
			continue;
		if (want_object ? GELF_ST_TYPE(sym.st_info) != STT_OBJECT
				: GELF_ST_TYPE(sym.st_info) != STT_TLS)
			continue;
		sym_name = elf_strptr(elf, shdr->sh_link, sym.st_name);
		if (!sym_name || strcmp(sym_name, name) != 0)
			continue;
		out->found = true;
		out->index = dynamic ? i : SIZE_MAX;
		out->value = sym.st_value;
		out->address = sym.st_value;
		return;
	}
}

static struct tls_symbol find_symbol(Elf *elf, const char *name, bool want_object)
{
	struct tls_symbol dyn = { 0 }, sym = { 0 };
	Elf_Scn *scn = NULL;
	GElf_Shdr shdr;

	while ((scn = elf_nextscn(elf, scn))) {
		if (!gelf_getshdr(scn, &shdr))
			continue;
		if (shdr.sh_type == SHT_DYNSYM && !dyn.found)
			find_in_symtab(elf, scn, &shdr, name, want_object, true, &dyn);
		else if (shdr.sh_type == SHT_SYMTAB && !sym.found)
			find_in_symtab(elf, scn, &shdr, name, want_object, false, &sym);
	}
	return dyn.found ? dyn : sym;
}

static bool tls_segment(Elf *elf, uint64_t *memsz, uint64_t *align)
{
	size_t n;
	GElf_Phdr ph;

	if (elf_getphdrnum(elf, &n))
		return false;
	for (size_t i = 0; i < n; i++) {
		if (gelf_getphdr(elf, (int)i, &ph) && ph.p_type == PT_TLS) {
			*memsz = ph.p_memsz;
			*align = ph.p_align;
			return true;
		}
	}
	return false;
}

/* The load bias of a file mapped with file offset `offset` at `start`. */
static bool load_bias(Elf *elf, uint64_t start, uint64_t offset, uint64_t *bias)
{
	size_t n;
	GElf_Phdr ph;

	if (elf_getphdrnum(elf, &n))
		return false;
	for (size_t i = 0; i < n; i++) {
		if (!gelf_getphdr(elf, (int)i, &ph) || ph.p_type != PT_LOAD)
			continue;
		if (offset >= (ph.p_offset & ~4095ull) && offset < ph.p_offset + ph.p_filesz) {
			*bias = start - (ph.p_vaddr + offset - ph.p_offset);
			return true;
		}
	}
	return false;
}

/* A library's variable, through the GOT slot a dynamic relocation against it names. */
static int library_tls(Elf *elf, size_t sym_index, uint64_t bias, int mem_fd,
		       struct context_tls *out)
{
	Elf_Scn *scn = NULL;
	GElf_Shdr shdr;
	GElf_Rela rela;
	bool saw_reloc = false;

	while ((scn = elf_nextscn(elf, scn))) {
		Elf_Data *data;
		size_t n;

		if (!gelf_getshdr(scn, &shdr) || shdr.sh_type != SHT_RELA || !shdr.sh_entsize)
			continue;
		data = elf_getdata(scn, NULL);
		n = shdr.sh_size / shdr.sh_entsize;
		for (size_t i = 0; data && i < n; i++) {
			uint64_t slot[2] = { 0, 0 };
			unsigned type;

			if (!gelf_getrela(data, (int)i, &rela) ||
			    GELF_R_SYM(rela.r_info) != sym_index)
				continue;
			type = GELF_R_TYPE(rela.r_info);
			if (type != R_X86_64_TLSDESC && type != R_X86_64_TPOFF64 &&
			    type != R_X86_64_DTPMOD64)
				continue;
			saw_reloc = true;
			if (read_mem(mem_fd, bias + rela.r_offset, slot, sizeof(slot)))
				continue;
			if (type == R_X86_64_TPOFF64) {
				out->model = CONTEXT_TLS_STATIC;
				out->offset = (int64_t)slot[0];
				return 0;
			}
			if (type == R_X86_64_DTPMOD64) {
				if (!slot[0])
					continue;
				out->model = CONTEXT_TLS_DTV;
				out->module = (uint32_t)slot[0];
				out->offset = (int64_t)slot[1];
				return 0;
			}
			/* TLSDESC {resolver, argument}: static TLS's argument is the offset from
			 * the thread pointer (negative, variant II); dynamic TLS's points to
			 * {module, offset, generation}. */
			if (!slot[0])
				continue;
			if ((int64_t)slot[1] < 0 && (int64_t)slot[1] > -STATIC_TLS_MAX) {
				out->model = CONTEXT_TLS_STATIC;
				out->offset = (int64_t)slot[1];
				return 0;
			} else {
				uint64_t index[2];

				if (read_mem(mem_fd, slot[1], index, sizeof(index)) || !index[0] ||
				    index[0] > 4096)
					continue;
				out->model = CONTEXT_TLS_DTV;
				out->module = (uint32_t)index[0];
				out->offset = (int64_t)index[1];
				return 0;
			}
		}
	}
	return saw_reloc ? -EAGAIN : -ENOENT;
}

/* One file of the process: fills the ABIs it defines that are not found yet. *defines_any
 * says whether it defines any of the variables (found or not usable yet). */
static int examine_file(pid_t pid, const struct proc_map_entry *e, bool executable, int mem_fd,
			struct context_tls_found *out, bool *defines_any)
{
	char path[4400];
	struct mapped_elf *m;
	uint64_t bias, memsz = 0, align = 0;
	int ret, result = 0;
	Elf *elf;

	snprintf(path, sizeof(path), "/proc/%d/root%s", (int)pid, e->path);
	if (mapped_elf__open(path, &m) != 0)
		return 0;
	elf = mapped_elf__elf(m);
	if (!load_bias(elf, e->start, e->offset, &bias) || !tls_segment(elf, &memsz, &align))
		goto out;
	for (int abi = 0; abi < 2; abi++) {
		struct context_tls *tls = &out->where.tls[abi];
		struct tls_symbol sym = { 0 };

		if (tls->kind != ALLOC_CONTEXT_NONE)
			continue;
		if (abi == 0) {
			for (size_t i = 0; i < sizeof(otel_names) / sizeof(otel_names[0]); i++) {
				sym = find_symbol(elf, otel_names[i], false);
				if (sym.found)
					break;
			}
		} else {
			struct tls_symbol version = find_symbol(elf, labels_version_name, true);
			uint32_t value = 0;

			/* v1 only: any other version is a layout this reader does not know. */
			if (!version.found ||
			    read_mem(mem_fd, bias + version.address, &value, sizeof(value)) ||
			    value != 1)
				continue;
			sym = find_symbol(elf, labels_name, false);
		}
		if (!sym.found)
			continue;
		*defines_any = true;
		if (executable) {
			tls->model = CONTEXT_TLS_STATIC;
			tls->offset = context_tls_static_offset(sym.value, memsz, align);
		} else {
			if (sym.index == SIZE_MAX)
				continue; /* a library's variable is reached through .dynsym */
			ret = library_tls(elf, sym.index, bias, mem_fd, tls);
			if (ret) {
				if (ret == -EAGAIN)
					result = -EAGAIN;
				continue;
			}
		}
		tls->kind = abi == 0 ? ALLOC_CONTEXT_OTEL : ALLOC_CONTEXT_CUSTOM_LABELS;
		snprintf(out->files[abi], sizeof(out->files[abi]), "%s", e->path);
	}
out:
	mapped_elf__put(m);
	return result;
}

static bool seen_file(const struct context_tls_seen *seen, const struct proc_map_entry *e)
{
	for (size_t i = 0; seen && i < seen->count; i++)
		if (seen->files[i].inode == e->inode && seen->files[i].dev_major == e->dev_major &&
		    seen->files[i].dev_minor == e->dev_minor)
			return true;
	return false;
}

int context_tls__find(pid_t pid, struct context_tls_seen *seen, struct context_tls_found *out,
		      char *err, size_t err_len)
{
	struct proc_maps *maps = NULL;
	char mem_path[64], exe_path[64];
	struct stat exe;
	bool have_exe;
	int mem_fd, ret, result = 0;

	memset(out, 0, sizeof(*out));
	snprintf(exe_path, sizeof(exe_path), "/proc/%d/exe", (int)pid);
	have_exe = stat(exe_path, &exe) == 0;
	snprintf(mem_path, sizeof(mem_path), "/proc/%d/mem", (int)pid);
	mem_fd = open(mem_path, O_RDONLY | O_CLOEXEC);
	if (mem_fd < 0) {
		ret = -errno;
		snprintf(err, err_len, "cannot read the memory of pid %d: %s", (int)pid,
			 strerror(-ret));
		return ret == -ENOENT ? -ESRCH : ret;
	}
	ret = proc_maps__read(pid, &maps);
	if (ret) {
		snprintf(err, err_len, "cannot read the memory map of pid %d: %s", (int)pid,
			 strerror(-ret));
		close(mem_fd);
		return ret;
	}
	for (size_t i = 0; i < proc_maps__count(maps); i++) {
		const struct proc_map_entry *e = proc_maps__entry(maps, i);
		bool executable, defines_any = false;

		/* Each file once: its first mapping (offset 0 in practice). */
		if (!proc_map_entry__is_file(e) || e->path[0] != '/')
			continue;
		if (i > 0 && proc_maps__entry(maps, i - 1)->inode == e->inode &&
		    proc_maps__entry(maps, i - 1)->dev_major == e->dev_major &&
		    proc_maps__entry(maps, i - 1)->dev_minor == e->dev_minor)
			continue;
		if (seen_file(seen, e))
			continue;
		executable = have_exe && exe.st_ino == e->inode &&
			     major(exe.st_dev) == e->dev_major && minor(exe.st_dev) == e->dev_minor;
		ret = examine_file(pid, e, executable, mem_fd, out, &defines_any);
		if (ret == -EAGAIN)
			result = -EAGAIN;
		/* A file that defines nothing never will (a file replaced on disk is another
		 * inode): the next look skips it. */
		if (!defines_any && seen && seen->count < CONTEXT_TLS_SEEN_MAX) {
			seen->files[seen->count].inode = e->inode;
			seen->files[seen->count].dev_major = e->dev_major;
			seen->files[seen->count].dev_minor = e->dev_minor;
			seen->count++;
		}
		if (out->where.tls[0].kind && out->where.tls[1].kind)
			break;
	}
	proc_maps__free(maps);
	close(mem_fd);
	if (result == -EAGAIN && !out->where.tls[0].kind && !out->where.tls[1].kind)
		snprintf(err, err_len, "pid %d: the context variable's GOT slot is not filled yet",
			 (int)pid);
	else
		result = 0;
	return result;
}
