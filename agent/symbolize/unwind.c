/* Unwinding sampled stacks: the rbp chain through the stack copy, or CFI through elfutils
 * libdwfl over the same copy (dwfl_attach_state + dwfl_getthread_frames, with thread callbacks
 * that serve the sample's registers and its stack copy, as Linux perf does).
 *
 * Each process gets one Dwfl, built from a maps snapshot when the process is added and kept
 * across samples (rebuilt only when its executable mappings change): CFI tables warm up with
 * use, so a per-sample Dwfl would cost far more than the walk. Modules are reported with
 * dwfl_report_module at an address range from which libdwfl derives the load bias computed
 * here (mapping start and offset against the file's PT_LOAD segments). Their files are opened
 * when the process is added, through /proc/PID/root, so an exited process still unwinds, and
 * shared by every process mapping them: one libelf descriptor per file, no file descriptor
 * kept. The sample being unwound travels to the callbacks through the process object (libdwfl
 * fixes the callback argument at attach time).
 *
 * libdwfl falls back to the frame pointer (its x86-64 backend) for a frame whose pc has no
 * CFI; which way each frame was found is worked out here by asking whether the pc had CFI,
 * with a small cache in front, so UNWIND_DWARF can refuse those frames and the result can count
 * them. */
#include "symbolize/unwind.h"

#include <elf.h>
#include <elfutils/libdwfl.h>
#include <gelf.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "util/hash.h"
#include "symbolize/proc_maps.h"
#include "symbolize/unwind_tables.h"
#include "util/clock.h"
#include "elf/mapped_elf.h"

/* x86-64 DWARF register numbers (System V psABI, figure 3.36). */
#define DWARF_REG_RBX 3
#define DWARF_REG_RBP 6
#define DWARF_REG_RSP 7
#define DWARF_REG_R12 12

#define PAGE_MASK_4K (~(uint64_t)4095)

/* Remembers whether a pc (the address CFI is looked up at) has CFI. Direct-mapped, keyed by
 * (session epoch, pc): hot allocation sites repeat the same few hundred pcs. */
#define CFI_CACHE_SLOTS 4096

struct cfi_cache_slot {
	uint64_t pc;
	uint32_t epoch; /* 0: empty */
	bool has_cfi;
};

/* An ELF file mapped by traced processes, opened once and shared by every session whose
 * process maps it (libelf reference-counts the descriptor). libelf maps the whole file, so no
 * file descriptor stays open: many processes times many libraries would exhaust them. */
struct unwind_file {
	uint32_t dev_major, dev_minor;
	uint64_t inode;
	struct mapped_elf *mapped; /* this cache's reference */
	Elf *elf;		   /* mapped's */
	char *path;	  /* as the first process that mapped it names it */
	uint16_t e_type;  /* ET_EXEC or ET_DYN */
	GElf_Phdr *loads; /* PT_LOAD segments, in file order */
	size_t n_loads;
	uint64_t first_vaddr; /* the first PT_LOAD's p_vaddr, aligned down to p_align */
	uint64_t vaddr_end;   /* end of the highest PT_LOAD */
	size_t users;	      /* sessions reporting it */
	struct unwind_file *next;
};

#define FILE_BUCKETS 256

/* A process's libdwfl view: one module per (file, bias), built from one maps snapshot. */
struct session {
	Dwfl *dwfl; /* NULL when no module could be reported */
	struct unwind_file **files;
	uint64_t *biases;
	size_t n_files;
};

struct unwind_walk;

struct unwind_process {
	pid_t pid;
	struct proc_maps *maps; /* NULL when the process was gone before it could be read */
	/* Identity of the executable file mappings the session was built from. */
	uint64_t modules_sig;
	struct session session;
	bool attached; /* dwfl_attach_state succeeded: CFI walks are possible */
	uint32_t epoch;
	bool gone;		      /* /proc/PID/maps said ESRCH: never re-read */
	uint64_t last_miss_reread_ns; /* CLOCK_MONOTONIC */
	struct unwind_walk *walk;     /* the sample being unwound, for the callbacks */
	struct unwind_process *next;  /* hash chain */
};

struct unwinder {
	struct unwind_process **buckets;
	size_t n_buckets; /* a power of two */
	size_t n_processes;
	/* Consecutive samples mostly come from one process. Cleared when that process is
	 * removed. */
	struct unwind_process *last;
	struct unwind_file *files[FILE_BUCKETS];
	size_t n_files;
	uint32_t next_epoch;
	struct unwind_tables *tables; /* UNWIND_KERNEL: the kernel's tables, else NULL */
	struct cfi_cache_slot cfi_cache[CFI_CACHE_SLOTS];
};

/* One sample's walk through libdwfl. */
struct unwind_walk {
	struct unwinder *u;
	struct unwind_process *proc;
	const struct unwind_input *in;
	enum unwind_mode mode;
	uint64_t *pcs;
	size_t max_pcs;
	struct unwind_result *out;
	uint64_t init_pc, init_sp; /* libdwfl's first frame: the leaf, or the caller */
	bool have_prev;
	uint64_t prev_lookup_pc; /* where the previous frame's CFI is looked up */
	uint64_t prev_sp;
	bool prev_have_sp;
	bool aborted;	  /* the callback stopped the walk before its end */
	bool read_failed; /* libdwfl wanted memory outside the copy */
};

int unwind_mode_parse(const char *text, enum unwind_mode *mode)
{
	if (!text || !mode)
		return -EINVAL;
	if (strcmp(text, "auto") == 0)
		*mode = UNWIND_AUTO;
	else if (strcmp(text, "fp") == 0)
		*mode = UNWIND_FP;
	else if (strcmp(text, "dwarf") == 0)
		*mode = UNWIND_DWARF;
	else if (strcmp(text, "kernel") == 0)
		*mode = UNWIND_KERNEL;
	else
		return -EINVAL;
	return 0;
}

const char *unwind_mode_name(enum unwind_mode mode)
{
	switch (mode) {
	case UNWIND_AUTO:
		return "auto";
	case UNWIND_FP:
		return "fp";
	case UNWIND_DWARF:
		return "dwarf";
	case UNWIND_KERNEL:
		return "kernel";
	}
	return "unknown";
}

/* The 8 bytes at addr, from the stack copy only. */
static bool read_stack(const struct unwind_input *in, uint64_t addr, uint64_t *value)
{
	uint64_t sp = in->regs[ALLOC_REG_SP];

	if (in->stack_len < sizeof(*value) || addr < sp ||
	    addr - sp > in->stack_len - sizeof(*value))
		return false;
	memcpy(value, in->stack + (addr - sp), sizeof(*value));
	return true;
}

/* Appends pc; false (and truncated at the depth limit) when pcs is full. */
static bool push_pc(uint64_t *pcs, size_t max_pcs, struct unwind_result *out, uint64_t pc,
		    bool by_cfi)
{
	if (out->n_pcs >= max_pcs) {
		out->truncated = true;
		out->depth_cut = true;
		return false;
	}
	pcs[out->n_pcs++] = pc;
	if (by_cfi)
		out->cfi_frames++;
	else
		out->fp_frames++;
	return true;
}

/* The frame-pointer walk. At an entry probe the allocator has not pushed its frame: the return
 * address into its caller is at sp and rbp is still the caller's frame pointer. A frame record
 * must lie above the previous one, inside the copy, 8-byte aligned; rbp == 0 (set by _start
 * and thread entry) or a zero return address ends the chain. */
static void fp_walk(const struct unwind_input *in, uint64_t *pcs, size_t max_pcs,
		    struct unwind_result *out)
{
	uint64_t sp = in->regs[ALLOC_REG_SP];
	uint64_t bp = in->regs[ALLOC_REG_BP];
	uint64_t ret, next_bp, lowest;

	pcs[0] = in->regs[ALLOC_REG_IP];
	out->n_pcs = 1;
	if (!read_stack(in, sp, &ret)) {
		out->truncated = true;
		return;
	}
	if (!ret)
		return;
	if (!push_pc(pcs, max_pcs, out, ret, false))
		return;
	lowest = sp + sizeof(uint64_t);
	while (bp) {
		if (bp < lowest || bp % sizeof(uint64_t) || !read_stack(in, bp, &next_bp) ||
		    !read_stack(in, bp + sizeof(uint64_t), &ret)) {
			out->truncated = true;
			return;
		}
		if (!ret)
			return;
		if (!push_pc(pcs, max_pcs, out, ret, false))
			return;
		lowest = bp + 2 * sizeof(uint64_t);
		bp = next_bp;
	}
}

/* Whether libdwfl finds CFI for lookup_pc (a leaf's pc, or a return address minus one): the
 * same search it makes before falling back to the frame pointer. */
static bool pc_has_cfi(struct unwinder *u, struct unwind_process *p, uint64_t lookup_pc)
{
	struct cfi_cache_slot *slot;
	Dwfl_Module *mod;
	Dwarf_CFI *cfi;
	Dwarf_Frame *frame;
	Dwarf_Addr bias;
	bool found = false;

	slot = &u->cfi_cache[hash_combine(p->epoch, lookup_pc) & (CFI_CACHE_SLOTS - 1)];
	if (slot->epoch == p->epoch && slot->pc == lookup_pc)
		return slot->has_cfi;

	mod = dwfl_addrmodule(p->session.dwfl, lookup_pc);
	if (mod) {
		cfi = dwfl_module_eh_cfi(mod, &bias);
		if (cfi && dwarf_cfi_addrframe(cfi, lookup_pc - bias, &frame) == 0) {
			free(frame);
			found = true;
		}
		if (!found) {
			/* .debug_frame, possibly from a separate debug file: looked up once per
			 * module, libdwfl remembers the outcome. */
			cfi = dwfl_module_dwarf_cfi(mod, &bias);
			if (cfi && dwarf_cfi_addrframe(cfi, lookup_pc - bias, &frame) == 0) {
				free(frame);
				found = true;
			}
		}
	}
	slot->pc = lookup_pc;
	slot->epoch = p->epoch;
	slot->has_cfi = found;
	return found;
}

/* libdwfl callbacks. There is one thread per walk (the sample's), and memory is the copy. */

static pid_t next_thread(Dwfl *dwfl, void *arg, void **thread_argp)
{
	struct unwind_process *p = arg;

	/* Only the sample's thread exists, and only once. */
	if (*thread_argp || !p->walk)
		return 0;
	*thread_argp = p->walk;
	return p->walk->in->tid > 0 ? p->walk->in->tid : p->pid;
}

static bool get_thread(Dwfl *dwfl, pid_t tid, void *arg, void **thread_argp)
{
	struct unwind_process *p = arg;

	if (!p->walk)
		return false;
	*thread_argp = p->walk;
	return true;
}

static bool memory_read(Dwfl *dwfl, Dwarf_Addr addr, Dwarf_Word *result, void *arg)
{
	struct unwind_process *p = arg;
	uint64_t value;

	if (!p->walk || !read_stack(p->walk->in, addr, &value)) {
		if (p->walk)
			p->walk->read_failed = true;
		return false;
	}
	*result = value;
	return true;
}

static bool set_initial_registers(Dwfl_Thread *thread, void *thread_arg)
{
	struct unwind_walk *w = thread_arg;
	const uint64_t *regs = w->in->regs;
	Dwarf_Word rbx = regs[ALLOC_REG_BX];
	Dwarf_Word rbp_rsp[2] = {regs[ALLOC_REG_BP], w->init_sp};
	Dwarf_Word r12_r15[4] = {regs[ALLOC_REG_R12], regs[ALLOC_REG_R13], regs[ALLOC_REG_R14],
				 regs[ALLOC_REG_R15]};

	/* The argument and scratch registers were not captured: they stay unknown, and a rule
	 * that needs one fails, which ends the walk. */
	if (!dwfl_thread_state_registers(thread, DWARF_REG_RBX, 1, &rbx) ||
	    !dwfl_thread_state_registers(thread, DWARF_REG_RBP, 2, rbp_rsp) ||
	    !dwfl_thread_state_registers(thread, DWARF_REG_R12, 4, r12_r15))
		return false;
	dwfl_thread_state_register_pc(thread, w->init_pc);
	return true;
}

static const Dwfl_Thread_Callbacks thread_callbacks = {
	.next_thread = next_thread,
	.get_thread = get_thread,
	.memory_read = memory_read,
	.set_initial_registers = set_initial_registers,
};

/* Hands libdwfl another reference to the module's shared descriptor (libelf counts them;
 * dwfl_end drops it), and the file's name, next to which .gnu_debuglink files are looked for. */
static int find_elf_shared(Dwfl_Module *mod, void **userdata, const char *name, Dwarf_Addr base,
			   char **file_name, Elf **elfp)
{
	struct unwind_file *f = *userdata;

	*elfp = f ? elf_begin(-1, ELF_C_READ_MMAP, f->elf) : NULL;
	if (*elfp && !*file_name)
		*file_name = strdup(f->path);
	return -1;
}

static const Dwfl_Callbacks dwfl_callbacks = {
	.find_elf = find_elf_shared,
	/* Build-id and .gnu_debuglink lookups under /usr/lib/debug: .debug_frame for code
	 * whose .eh_frame lacks it. */
	.find_debuginfo = dwfl_standard_find_debuginfo,
	.section_address = dwfl_offline_section_address,
	.debuginfo_path = NULL, /* libdwfl's default: ":.debug:/usr/lib/debug" */
};

/* Called for each sample frame libdwfl produces, leaf first. The first one is the frame the
 * walk started from, already in pcs. */
static int frame_cb(Dwfl_Frame *state, void *arg)
{
	struct unwind_walk *w = arg;
	Dwarf_Addr pc;
	Dwarf_Word sp = 0;
	bool have_sp, by_cfi;

	if (!dwfl_frame_pc(state, &pc, NULL))
		goto stop;
	have_sp = dwfl_frame_reg(state, DWARF_REG_RSP, &sp) == 0;
	if (!w->have_prev) {
		w->have_prev = true;
		/* The initial frame is an activation: its CFI is looked up at its pc as is. */
		w->prev_lookup_pc = pc;
		w->prev_sp = sp;
		w->prev_have_sp = have_sp;
		return DWARF_CB_OK;
	}

	by_cfi = pc_has_cfi(w->u, w->proc, w->prev_lookup_pc);
	if (!by_cfi && w->mode == UNWIND_DWARF)
		goto stop;
	/* Each caller's frame lies above its callee's: anything else is a loop or garbage. A
	 * frame-pointer step that could not say where the stack pointer went is not trusted. */
	if (!have_sp || (w->prev_have_sp && sp <= w->prev_sp))
		goto stop;
	if (!pc || !push_pc(w->pcs, w->max_pcs, w->out, pc, by_cfi))
		goto stop;
	w->prev_lookup_pc = pc - 1;
	w->prev_sp = sp;
	w->prev_have_sp = true;
	return DWARF_CB_OK;
stop:
	w->aborted = true;
	return DWARF_CB_ABORT;
}

/* The CFI walk (UNWIND_DWARF, UNWIND_AUTO) over p's session. */
static void cfi_walk(struct unwinder *u, struct unwind_process *p, const struct unwind_input *in,
		     enum unwind_mode mode, uint64_t *pcs, size_t max_pcs,
		     struct unwind_result *out)
{
	struct unwind_walk w = {
		.u = u,
		.proc = p,
		.in = in,
		.mode = mode,
		.pcs = pcs,
		.max_pcs = max_pcs,
		.out = out,
		.init_pc = in->regs[ALLOC_REG_IP],
		.init_sp = in->regs[ALLOC_REG_SP],
	};
	uint64_t ret;
	int rc;

	pcs[0] = in->regs[ALLOC_REG_IP];
	out->n_pcs = 1;
	if (!pc_has_cfi(u, p, w.init_pc)) {
		if (mode == UNWIND_DWARF) {
			out->truncated = true;
			return;
		}
		/* An allocator without CFI, probed at its entry: its caller's return address is
		 * at sp and every callee-saved register is the caller's. Start libdwfl at the
		 * caller, looked up inside its call instruction as for any return address. */
		if (!read_stack(in, w.init_sp, &ret)) {
			out->truncated = true;
			return;
		}
		if (!ret || !push_pc(pcs, max_pcs, out, ret, false))
			return;
		w.init_pc = ret - 1;
		w.init_sp += sizeof(uint64_t);
	}

	p->walk = &w;
	rc = dwfl_getthread_frames(p->session.dwfl, in->tid > 0 ? in->tid : p->pid, frame_cb, &w);
	p->walk = NULL;
	/* rc 0 means libdwfl reached a frame whose return address is undefined (_start, thread
	 * entry), or failed to read one: only the former is the outermost frame. */
	if (rc != 0 || w.aborted || w.read_failed)
		out->truncated = true;
}

/* Identity of the executable file mappings: a changed value means the session is stale. */
static uint64_t modules_signature(const struct proc_maps *maps)
{
	uint64_t sig = 0x6d6f64756c6573ULL;
	size_t i, count = maps ? proc_maps__count(maps) : 0;

	for (i = 0; i < count; i++) {
		const struct proc_map_entry *e = proc_maps__entry(maps, i);
		const char *c;

		if (!e->executable || !proc_map_entry__is_file(e))
			continue;
		sig = hash_combine(sig, e->start);
		sig = hash_combine(sig, e->end);
		sig = hash_combine(sig, e->offset);
		sig = hash_combine(sig, e->inode);
		sig = hash_combine(sig, ((uint64_t)e->dev_major << 32) | e->dev_minor);
		sig = hash_combine(sig, e->deleted);
		for (c = e->path; *c; c++)
			sig = hash_combine(sig, (unsigned char)*c);
	}
	return sig;
}

/* Opens the file e maps as the process sees it, checked by inode. A file replaced since it
 * was mapped (an upgrade: the kernel prints " (deleted)") is reached through
 * /proc/PID/map_files, which names the mapped file itself (root only). -errno. */
static int open_mapped_file(pid_t pid, const struct proc_map_entry *e, struct mapped_elf **out)
{
	char path[PATH_MAX + 32];
	int ret;

	if (!e->deleted) {
		snprintf(path, sizeof(path), "/proc/%d/root%s", (int)pid, e->path);
		if (mapped_elf__open(path, out) == 0) {
			if (mapped_elf__inode(*out) == e->inode)
				return 0;
			mapped_elf__put(*out);
		}
	}
	snprintf(path, sizeof(path), "/proc/%d/map_files/%" PRIx64 "-%" PRIx64, (int)pid, e->start,
		 e->end);
	ret = mapped_elf__open(path, out);
	if (ret)
		return ret;
	if (mapped_elf__inode(*out) != e->inode) {
		mapped_elf__put(*out);
		return -ESTALE;
	}
	return 0;
}

static size_t file_bucket(uint32_t dev_major, uint32_t dev_minor, uint64_t inode)
{
	return hash_combine(((uint64_t)dev_major << 32) | dev_minor, inode) & (FILE_BUCKETS - 1);
}

static void file_free(struct unwind_file *f)
{
	if (!f)
		return;
	mapped_elf__put(f->mapped);
	free(f->loads);
	free(f->path);
	free(f);
}

/* Reads what reporting needs from an opened ELF file: its type and PT_LOAD segments. Takes
 * over the reference to mapped. -ENOEXEC for anything but an x86-64 ET_EXEC/ET_DYN with
 * loadable segments, -ENOMEM. */
static int file_load(struct mapped_elf *mapped, const struct proc_map_entry *e,
		     struct unwind_file **out)
{
	struct unwind_file *f;
	GElf_Ehdr ehdr;
	size_t phnum, i;
	int ret = -ENOEXEC;

	f = calloc(1, sizeof(*f));
	if (!f) {
		mapped_elf__put(mapped);
		return -ENOMEM;
	}
	f->mapped = mapped;
	f->elf = mapped_elf__elf(mapped);
	if (!gelf_getehdr(f->elf, &ehdr) ||
	    ehdr.e_machine != EM_X86_64 || (ehdr.e_type != ET_EXEC && ehdr.e_type != ET_DYN) ||
	    elf_getphdrnum(f->elf, &phnum) != 0)
		goto fail;
	f->e_type = ehdr.e_type;
	f->loads = calloc(phnum ? phnum : 1, sizeof(*f->loads));
	f->path = strdup(e->path);
	if (!f->loads || !f->path) {
		ret = -ENOMEM;
		goto fail;
	}
	for (i = 0; i < phnum; i++) {
		GElf_Phdr ph;

		if (!gelf_getphdr(f->elf, (int)i, &ph))
			goto fail;
		if (ph.p_type != PT_LOAD)
			continue;
		/* libdwfl places a module by its first PT_LOAD, aligned down. */
		if (!f->n_loads)
			f->first_vaddr = ph.p_vaddr & -(ph.p_align ? ph.p_align : 1);
		if (ph.p_vaddr + ph.p_memsz > f->vaddr_end)
			f->vaddr_end = ph.p_vaddr + ph.p_memsz;
		f->loads[f->n_loads++] = ph;
	}
	if (!f->n_loads)
		goto fail;
	f->dev_major = e->dev_major;
	f->dev_minor = e->dev_minor;
	f->inode = e->inode;
	*out = f;
	return 0;
fail:
	file_free(f);
	return ret;
}

/* The shared file behind e, opened on first use; NULL when it cannot be opened or is not a
 * loadable ELF file (its frames then have no CFI). The caller holds one more use of it. */
static struct unwind_file *file_get(struct unwinder *u, pid_t pid, const struct proc_map_entry *e,
				    int *err)
{
	size_t b = file_bucket(e->dev_major, e->dev_minor, e->inode);
	struct mapped_elf *mapped;
	struct unwind_file *f;

	*err = 0;
	for (f = u->files[b]; f; f = f->next) {
		if (f->inode == e->inode && f->dev_major == e->dev_major &&
		    f->dev_minor == e->dev_minor) {
			f->users++;
			return f;
		}
	}
	if (open_mapped_file(pid, e, &mapped) != 0)
		return NULL;
	*err = file_load(mapped, e, &f);
	if (*err) {
		if (*err != -ENOMEM)
			*err = 0;
		return NULL;
	}
	f->users = 1;
	f->next = u->files[b];
	u->files[b] = f;
	u->n_files++;
	return f;
}

static void file_put(struct unwinder *u, struct unwind_file *f)
{
	struct unwind_file **link;

	if (!f || --f->users)
		return;
	for (link = &u->files[file_bucket(f->dev_major, f->dev_minor, f->inode)]; *link;
	     link = &(*link)->next) {
		if (*link == f) {
			*link = f->next;
			break;
		}
	}
	u->n_files--;
	file_free(f);
}

/* The load bias of f as mapped by e (runtime address minus ELF virtual address): the PT_LOAD
 * segment holding the mapping's file offset was placed at e->start. 0 for ET_EXEC.
 *
 * Two segments can share a file page: lld (rustc's default linker since 1.90) packs the
 * read-only segment and the code segment back to back, so the page the code mapping starts
 * at also lies inside the read-only segment's file range, whose vaddr - offset differs by a
 * page. Taking the first segment that holds the offset gave every Rust executable a bias one
 * page off, and libdwfl then found no CFI for any of its frames: the segment that starts in
 * the mapping's first page wins, then one whose execute permission matches the mapping. */
static bool file_bias(const struct unwind_file *f, const struct proc_map_entry *e, uint64_t *bias)
{
	const GElf_Phdr *best = NULL;
	int best_score = -1;
	size_t i;

	if (f->e_type == ET_EXEC) {
		*bias = 0;
		return true;
	}
	for (i = 0; i < f->n_loads; i++) {
		const GElf_Phdr *ph = &f->loads[i];
		int score = 0;

		if ((ph->p_offset & PAGE_MASK_4K) > e->offset ||
		    e->offset >= ph->p_offset + ph->p_filesz)
			continue;
		if ((ph->p_offset & PAGE_MASK_4K) == e->offset)
			score += 2;
		if (!!(ph->p_flags & PF_X) == !!e->executable)
			score += 1;
		if (score > best_score) {
			best = ph;
			best_score = score;
		}
	}
	if (!best)
		return false;
	*bias = e->start - e->offset - (best->p_vaddr - best->p_offset);
	return true;
}

static void session_release(struct unwinder *u, struct session *s)
{
	size_t i;

	/* libdwfl's references to the shared descriptors go first. */
	dwfl_end(s->dwfl);
	for (i = 0; i < s->n_files; i++)
		file_put(u, s->files[i]);
	free(s->files);
	free(s->biases);
	memset(s, 0, sizeof(*s));
}

/* Builds a session with one module per (file, bias) mapped executable in maps. s->dwfl is
 * NULL when no module could be reported (nothing to unwind with CFI). -ENOMEM only. */
static int session_build(struct unwinder *u, pid_t pid, const struct proc_maps *maps,
			 struct session *s)
{
	size_t i, j, count = proc_maps__count(maps);
	int ret = 0;

	memset(s, 0, sizeof(*s));
	s->dwfl = dwfl_begin(&dwfl_callbacks);
	s->files = calloc(count ? count : 1, sizeof(*s->files));
	s->biases = calloc(count ? count : 1, sizeof(*s->biases));
	if (!s->dwfl || !s->files || !s->biases) {
		ret = -ENOMEM;
		goto out;
	}
	dwfl_report_begin(s->dwfl);
	for (i = 0; i < count; i++) {
		const struct proc_map_entry *e = proc_maps__entry(maps, i);
		struct unwind_file *f;
		Dwfl_Module *mod;
		void **userdata;
		uint64_t bias;

		if (!e->executable || !proc_map_entry__is_file(e))
			continue;
		f = file_get(u, pid, e, &ret);
		if (ret)
			goto out;
		if (!f)
			continue;
		if (!file_bias(f, e, &bias)) {
			file_put(u, f);
			continue;
		}
		/* A file split into several executable mappings (mprotect) is one module. */
		for (j = 0; j < s->n_files; j++) {
			if (s->files[j] == f && s->biases[j] == bias)
				break;
		}
		if (j < s->n_files) {
			file_put(u, f);
			continue;
		}
		s->files[s->n_files] = f;
		s->biases[s->n_files++] = bias;
		/* libdwfl derives the bias back from where the module starts. find_elf hands it
		 * the shared descriptor when it first needs the file. */
		mod = dwfl_report_module(s->dwfl, e->path, bias + f->first_vaddr,
					 bias + f->vaddr_end);
		if (!mod)
			continue;
		dwfl_module_info(mod, &userdata, NULL, NULL, NULL, NULL, NULL, NULL);
		*userdata = f;
	}
	if (dwfl_report_end(s->dwfl, NULL, NULL) != 0 || !s->n_files) {
		dwfl_end(s->dwfl);
		s->dwfl = NULL;
	}
out:
	if (ret)
		session_release(u, s);
	return ret;
}

/* Gives the kernel p's executable file mappings, each with its file's table (built now when
 * the file is new). A mapping whose file could not be opened goes in without a table, so the
 * kernel knows to fall back there. -ENOMEM; other failures leave the process without a
 * kernel walk (its samples carry a copy). */
static int tables_install(struct unwinder *u, struct unwind_process *p)
{
	size_t i, j, count = p->maps ? proc_maps__count(p->maps) : 0, n = 0;
	struct unwind_table_mapping *list;
	int ret;

	if (!u->tables)
		return 0;
	list = calloc(count ? count : 1, sizeof(*list));
	if (!list)
		return -ENOMEM;
	for (i = 0; i < count; i++) {
		const struct proc_map_entry *e = proc_maps__entry(p->maps, i);
		struct unwind_table_mapping *m = &list[n];

		if (!e->executable || !proc_map_entry__is_file(e))
			continue;
		m->start = e->start;
		m->end = e->end;
		m->dev_major = e->dev_major;
		m->dev_minor = e->dev_minor;
		m->inode = e->inode;
		for (j = 0; j < p->session.n_files; j++) {
			struct unwind_file *f = p->session.files[j];

			if (f->inode == e->inode && f->dev_major == e->dev_major &&
			    f->dev_minor == e->dev_minor && file_bias(f, e, &m->bias)) {
				m->elf = f->elf;
				break;
			}
		}
		n++;
	}
	ret = unwind_tables__set_process(u->tables, p->pid, list, n);
	free(list);
	return ret == -ENOMEM ? ret : 0;
}

/* Installs maps in p: rebuilds the session when its executable mappings changed (or there is
 * none yet). Takes ownership of maps. Returns 1 when the session was rebuilt, 0 when it was
 * kept, -ENOMEM (maps freed, p unchanged). */
static int process_install_maps(struct unwinder *u, struct unwind_process *p,
				struct proc_maps *maps)
{
	uint64_t sig = modules_signature(maps);
	struct session s;
	int ret;

	if (p->maps && sig == p->modules_sig) {
		proc_maps__free(p->maps);
		p->maps = maps;
		return 0;
	}
	ret = session_build(u, p->pid, maps, &s);
	if (ret) {
		proc_maps__free(maps);
		return ret;
	}
	session_release(u, &p->session);
	proc_maps__free(p->maps);
	p->session = s;
	p->maps = maps;
	p->modules_sig = sig;
	/* libdwfl takes the architecture from the modules; the callback argument is fixed here,
	 * the sample changes through p->walk. */
	p->attached = s.dwfl && dwfl_attach_state(s.dwfl, NULL, p->pid, &thread_callbacks, p);
	if (++u->next_epoch == 0) {
		/* 0 marks an empty cache slot. A daemon that rebuilt 2^32 sessions would meet
		 * its old epochs again: start the cache over. */
		memset(u->cfi_cache, 0, sizeof(u->cfi_cache));
		u->next_epoch = 1;
	}
	p->epoch = u->next_epoch;
	ret = tables_install(u, p);
	return ret ? ret : 1;
}

/* Re-reads p's maps. 1: the session changed, 0: it did not, -errno (-ESRCH marks p gone). */
static int process_refresh(struct unwinder *u, struct unwind_process *p)
{
	struct proc_maps *maps;
	int ret;

	ret = proc_maps__read(p->pid, &maps);
	if (ret == -ESRCH)
		p->gone = true;
	if (ret)
		return ret;
	p->gone = false;
	return process_install_maps(u, p, maps);
}

static struct unwind_process *process_find(struct unwinder *u, pid_t pid)
{
	struct unwind_process *p;

	if (u->last && u->last->pid == pid)
		return u->last;
	for (p = u->buckets[hash_mix64((uint64_t)pid) & (u->n_buckets - 1)]; p; p = p->next) {
		if (p->pid == pid) {
			u->last = p;
			return p;
		}
	}
	return NULL;
}

static int process_table_grow(struct unwinder *u)
{
	size_t n = u->n_buckets * 2, i;
	struct unwind_process **buckets = calloc(n, sizeof(*buckets));

	if (!buckets)
		return -ENOMEM;
	for (i = 0; i < u->n_buckets; i++) {
		struct unwind_process *p = u->buckets[i], *next;

		for (; p; p = next) {
			size_t b = hash_mix64((uint64_t)p->pid) & (n - 1);

			next = p->next;
			p->next = buckets[b];
			buckets[b] = p;
		}
	}
	free(u->buckets);
	u->buckets = buckets;
	u->n_buckets = n;
	return 0;
}

/* A new, empty entry for pid (no maps yet). */
static int process_insert(struct unwinder *u, pid_t pid, struct unwind_process **out)
{
	struct unwind_process *p;
	size_t b;

	if (u->n_processes >= u->n_buckets && process_table_grow(u) != 0)
		return -ENOMEM;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->pid = pid;
	b = hash_mix64((uint64_t)pid) & (u->n_buckets - 1);
	p->next = u->buckets[b];
	u->buckets[b] = p;
	u->n_processes++;
	*out = p;
	return 0;
}

static void process_free(struct unwinder *u, struct unwind_process *p)
{
	unwind_tables__remove_process(u->tables, p->pid);
	session_release(u, &p->session);
	proc_maps__free(p->maps);
	free(p);
}

/* Unlinks p from the table and frees it, with its session; files no other session uses are
 * closed. Its CFI cache entries need no clearing: no later session gets its epoch. */
static void process_remove(struct unwinder *u, struct unwind_process *p)
{
	struct unwind_process **link;

	for (link = &u->buckets[hash_mix64((uint64_t)p->pid) & (u->n_buckets - 1)]; *link;
	     link = &(*link)->next) {
		if (*link == p) {
			*link = p->next;
			break;
		}
	}
	if (u->last == p)
		u->last = NULL;
	u->n_processes--;
	process_free(u, p);
}

int unwinder__new(struct unwinder **out)
{
	struct unwinder *u;

	if (!out)
		return -EINVAL;
	*out = NULL;
	u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	u->n_buckets = 64;
	u->buckets = calloc(u->n_buckets, sizeof(*u->buckets));
	if (!u->buckets) {
		free(u);
		return -ENOMEM;
	}
	*out = u;
	return 0;
}

void unwinder__free(struct unwinder *u)
{
	size_t i;

	if (!u)
		return;
	for (i = 0; i < u->n_buckets; i++) {
		struct unwind_process *p = u->buckets[i], *next;

		for (; p; p = next) {
			next = p->next;
			process_free(u, p);
		}
	}
	free(u->buckets);
	unwind_tables__free(u->tables);
	free(u);
}

int unwinder__use_kernel_tables(struct unwinder *u, int rows_fd, int procs_fd, int files_fd,
				uint32_t max_rows, char *err, size_t err_len)
{
	if (!u || u->tables)
		return -EINVAL;
	return unwind_tables__new(rows_fd, procs_fd, files_fd, max_rows, &u->tables, err, err_len);
}

int unwinder__prepare_file(struct unwinder *u, const char *path)
{
	struct stat st;
	Elf *elf;
	int fd, ret;

	if (!u || !path)
		return -EINVAL;
	if (!u->tables)
		return 0;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		ret = S_ISREG(st.st_mode) ? -errno : -EINVAL;
		close(fd);
		return ret;
	}
	elf = elf_begin(fd, ELF_C_READ_MMAP, NULL);
	if (!elf || elf_kind(elf) != ELF_K_ELF) {
		elf_end(elf);
		close(fd);
		return -ENOEXEC;
	}
	ret = unwind_tables__add_file(u->tables, elf, major(st.st_dev), minor(st.st_dev),
				      st.st_ino);
	elf_end(elf);
	close(fd);
	return ret;
}

void unwinder__table_stats(const struct unwinder *u, struct unwind_tables_stats *out)
{
	unwind_tables__stats(u ? u->tables : NULL, out);
}

/* Finds or creates pid's entry and reads its maps; *out is NULL when there is no entry. A new
 * pid that has exited gets none: samples keep arriving for a while after a process exits
 * (and was removed), and an entry for each would grow the table for good, while a miss only
 * costs a failed open of /proc/PID/maps. A new pid whose maps cannot be read for another
 * reason (no permission) gets an entry marked gone, so its samples do not retry /proc each
 * time; it goes when the process is removed. */
static int process_add(struct unwinder *u, pid_t pid, struct unwind_process **out)
{
	struct unwind_process *p = process_find(u, pid);
	bool created = false;
	int ret;

	*out = NULL;
	if (!p) {
		ret = process_insert(u, pid, &p);
		if (ret)
			return ret;
		u->last = p;
		created = true;
	}
	ret = process_refresh(u, p);
	if (ret == -ESRCH && created) {
		process_remove(u, p);
		return ret;
	}
	*out = p;
	if (ret < 0 && ret != -ENOMEM)
		p->gone = true;
	return ret < 0 ? ret : 0;
}

int unwinder__add_process(struct unwinder *u, pid_t pid)
{
	struct unwind_process *p;

	if (!u || pid <= 0)
		return -EINVAL;
	return process_add(u, pid, &p);
}

void unwinder__remove_process(struct unwinder *u, pid_t pid)
{
	struct unwind_process *p;

	if (!u || pid <= 0)
		return;
	p = process_find(u, pid);
	if (p)
		process_remove(u, p);
}

size_t unwinder__process_count(const struct unwinder *u)
{
	return u ? u->n_processes : 0;
}

size_t unwinder__file_count(const struct unwinder *u)
{
	return u ? u->n_files : 0;
}

/* True when some pc lies outside every mapping of p's snapshot: the process may have mapped
 * new code since (dlopen). Return addresses are looked up inside their call instruction. */
static bool has_unknown_pc(const struct unwind_process *p, const uint64_t *pcs, size_t n)
{
	size_t i;

	if (!p->maps)
		return false;
	for (i = 0; i < n; i++) {
		if (!proc_maps__find(p->maps, i ? pcs[i] - 1 : pcs[i]))
			return true;
	}
	return false;
}

/* The frames the kernel walked, as they are. */
static void kernel_frames(const struct unwind_input *in, uint64_t *pcs, size_t max_pcs,
			  struct unwind_result *out)
{
	size_t n = in->stack_len / sizeof(uint64_t), i;

	if (n > max_pcs) {
		n = max_pcs;
		out->truncated = true;
		out->depth_cut = true;
	}
	for (i = 0; i < n; i++)
		memcpy(&pcs[i], in->stack + i * sizeof(uint64_t), sizeof(uint64_t));
	out->n_pcs = n;
	out->cfi_frames = n ? (unsigned)(n - 1) : 0;
	if (in->flags & ALLOC_SAMPLE_TRUNCATED)
		out->truncated = true;
	if ((in->flags & (ALLOC_SAMPLE_TRUNCATED | ALLOC_SAMPLE_DEPTH_CUT)) ==
	    (ALLOC_SAMPLE_TRUNCATED | ALLOC_SAMPLE_DEPTH_CUT))
		out->depth_cut = true;
}

/* One walk of in over p's session; p may be NULL (no process to take CFI from). */
static void walk_once(struct unwinder *u, struct unwind_process *p, const struct unwind_input *in,
		      enum unwind_mode mode, uint64_t *pcs, size_t max_pcs,
		      struct unwind_result *out)
{
	bool reread = out->maps_reread;

	memset(out, 0, sizeof(*out));
	out->maps_reread = reread;
	if (p && p->attached) {
		cfi_walk(u, p, in, mode, pcs, max_pcs, out);
	} else if (mode == UNWIND_AUTO) {
		fp_walk(in, pcs, max_pcs, out);
	} else {
		/* No module with CFI known: the leaf is all a CFI-only walk can give. */
		pcs[0] = in->regs[ALLOC_REG_IP];
		out->n_pcs = 1;
		out->truncated = true;
	}
}

int unwinder__unwind(struct unwinder *u, const struct unwind_input *in, enum unwind_mode mode,
		     uint64_t *pcs, size_t max_pcs, struct unwind_result *out)
{
	struct unwind_process *p;
	uint64_t now;
	int ret;

	if (!u || !in || !in->regs || !out || (!pcs && max_pcs) || (!in->stack && in->stack_len) ||
	    (mode != UNWIND_AUTO && mode != UNWIND_FP && mode != UNWIND_DWARF &&
	     mode != UNWIND_KERNEL))
		return -EINVAL;
	if (mode == UNWIND_KERNEL)
		mode = UNWIND_AUTO; /* for the samples the kernel sent a copy with */
	memset(out, 0, sizeof(*out));
	if (!max_pcs) {
		out->truncated = true;
		return 0;
	}
	if (mode == UNWIND_FP) {
		fp_walk(in, pcs, max_pcs, out);
		return 0;
	}

	p = in->pid > 0 ? process_find(u, in->pid) : NULL;
	if (in->flags & ALLOC_SAMPLE_KERNEL_FRAMES) {
		kernel_frames(in, pcs, max_pcs, out);
		/* A pc outside the snapshot (a library loaded since) means the kernel's list is
		 * stale too: re-read, which rebuilds both, at most every few ms. */
		if (!p || p->gone || !has_unknown_pc(p, pcs, out->n_pcs))
			return 0;
		now = monotonic_ns();
		if (p->last_miss_reread_ns &&
		    now - p->last_miss_reread_ns < UNWIND_REREAD_INTERVAL_MS * 1000000ULL)
			return 0;
		p->last_miss_reread_ns = now;
		out->maps_reread = true;
		ret = process_refresh(u, p);
		return ret == -ENOMEM ? ret : 0;
	}
	if (!p && in->pid > 0) {
		ret = process_add(u, in->pid, &p);
		if (ret == -ENOMEM)
			return ret;
		out->maps_reread = true;
	}
	walk_once(u, p, in, mode, pcs, max_pcs, out);
	if (!p || p->gone || !has_unknown_pc(p, pcs, out->n_pcs))
		return 0;
	now = monotonic_ns();
	if (p->last_miss_reread_ns &&
	    now - p->last_miss_reread_ns < UNWIND_REREAD_INTERVAL_MS * 1000000ULL)
		return 0;
	p->last_miss_reread_ns = now;
	out->maps_reread = true;
	ret = process_refresh(u, p);
	if (ret == -ENOMEM)
		return ret;
	if (ret == 1)
		walk_once(u, p, in, mode, pcs, max_pcs, out);
	return 0;
}
