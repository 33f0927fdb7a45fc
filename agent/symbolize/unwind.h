/* Turns the registers and stack copy of a sampled allocation into a call stack. Debian-style
 * builds (glibc, libstdc++, -O2 programs) keep no frame pointers, so a frame-pointer walk loses
 * frames there; this module unwinds the copy with CFI (.eh_frame, or .debug_frame from a
 * separate debug file) through elfutils libdwfl, as Linux perf does, and falls back to the
 * frame-pointer chain where a module has no CFI.
 *
 * An unwinder keeps one libdwfl session per process, built from a /proc/PID/maps snapshot with
 * every module's file opened at once, so samples of a process still unwind after it exited.
 * Memory grows with the number of processes known: unwinder__remove_process forgets one (a
 * daemon calls it once an exited process's samples are unwound), unwinder__free all of them.
 * Files are shared by the sessions mapping them and closed as soon as no session does: no
 * file descriptor is kept, and reopening one costs little (a mapping and its program headers;
 * the CFI tables libdwfl reads belong to each session anyway). Not thread-safe. */
#ifndef ALLOCSCOPE_SYMBOLIZE_UNWIND_H
#define ALLOCSCOPE_SYMBOLIZE_UNWIND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "alloc.h"

enum unwind_mode {
	UNWIND_AUTO,  /* CFI where the code has it, the frame pointer elsewhere; the pipeline
			 also has the kernel walk stacks where it can (pipeline.c) */
	UNWIND_FP,    /* the rbp chain only (no ELF file is opened) */
	UNWIND_DWARF, /* CFI only: the walk stops at the first frame without CFI */
	UNWIND_KERNEL, /* the kernel walks the stack with tables built from CFI
			  (unwind_tables.h); samples it could not walk carry a stack copy,
			  unwound as in UNWIND_AUTO */
};

/* "auto", "fp", "dwarf", "kernel" -> *mode. -EINVAL for anything else (mode untouched). */
int unwind_mode_parse(const char *text, enum unwind_mode *mode);
/* "auto", "fp", "dwarf", "kernel"; "unknown" for a value outside the enum. */
const char *unwind_mode_name(enum unwind_mode mode);

/* One sample, as captured at an allocator's entry probe: the allocator has not pushed anything
 * yet, so the return address into its caller is at regs[ALLOC_REG_SP] and the callee-saved
 * registers still hold the caller's values. */
struct unwind_input {
	pid_t pid, tid;
	const uint64_t *regs; /* ALLOC_REG__COUNT values in enum alloc_reg order */
	const uint8_t *stack; /* copy of user memory [regs[ALLOC_REG_SP], + stack_len) */
	size_t stack_len;
	/* The sample's ALLOC_SAMPLE_* flags: with ALLOC_SAMPLE_KERNEL_FRAMES, stack holds the
	 * pcs the kernel walked (stack_len / 8 of them), which are returned as they are. */
	uint32_t flags;
};

/* The most frames a walk returns: size pcs for this. */
#define UNWIND_MAX_PCS UNWIND_MAX_FRAMES

struct unwind_result {
	size_t n_pcs; /* frames written to pcs, leaf first: pcs[0] = regs[IP] */
	/* Stopped before the outermost frame: ran out of the copy or of max_pcs, met a frame with
	 * neither CFI nor a usable frame pointer (any frame without CFI, in UNWIND_DWARF), read
	 * memory outside the copy, or the walk went backwards (a loop). */
	bool truncated;
	/* ... and of those, the walk that had max_pcs frames (or the kernel's UNWIND_MAX_FRAMES,
	 * ALLOC_SAMPLE_DEPTH_CUT) with more to go: a stack deeper than the limit, its innermost
	 * frames kept. Set only with truncated. */
	bool depth_cut;
	/* How each caller frame (pcs[1..]) was found: CFI, or without it (the rbp chain, or the
	 * return address at sp for the allocator's own frame). cfi_frames + fp_frames ==
	 * n_pcs - 1 when n_pcs > 0. */
	unsigned cfi_frames, fp_frames;
	/* The process had to be (re-)read during this call: it was unknown, or a pc fell outside
	 * its maps snapshot (a library loaded since). */
	bool maps_reread;
};

struct unwinder;

/* -ENOMEM. */
int unwinder__new(struct unwinder **out);
/* Closes every file and libdwfl session. Accepts NULL. */
void unwinder__free(struct unwinder *u);

/* Snapshots /proc/PID/maps now and opens the ELF file of each executable mapping (through
 * /proc/PID/root, so container paths work; a replaced file through /proc/PID/map_files), so
 * the process's samples still unwind after it exits. Calling it again for a known pid (after
 * an exec, or pid reuse) takes a new snapshot; the libdwfl session is rebuilt only when the
 * executable file mappings changed. A file that cannot be opened is not an error: its frames
 * have no CFI. Returns 0, -ESRCH when the process is gone (a known pid keeps its old
 * snapshot; an unknown one is not added), -EINVAL, -ENOMEM. */
int unwinder__add_process(struct unwinder *u, pid_t pid);

/* Forgets pid: its libdwfl session and maps snapshot. Files other known processes map stay
 * open; the others are closed. A later sample or add for the pid (pid reuse) starts from a
 * new snapshot. Unknown pid: no-op. */
void unwinder__remove_process(struct unwinder *u, pid_t pid);

/* Has the kernel walk stacks: from now on every process added (and every re-read of its
 * maps) also builds the tables of its files and installs its mapping list in the program's
 * maps (rows_fd: the unwind_rows array of max_rows, procs_fd: unwind_procs, files_fd:
 * unwind_files). -errno with a sentence in err. */
int unwinder__use_kernel_tables(struct unwinder *u, int rows_fd, int procs_fd, int files_fd,
				uint32_t max_rows, char *err, size_t err_len);
/* Builds the kernel table of the ELF file at path before any process maps it (a command's
 * executable and libraries, before it execs), so the kernel walks its frames from the first
 * sample. 0 (also without kernel tables), -ENOENT (no table: no usable CFI), -ENOEXEC, or the
 * open's -errno. */
int unwinder__prepare_file(struct unwinder *u, const char *path);
struct unwind_tables_stats;
/* The kernel tables' figures; zeros without them. */
void unwinder__table_stats(const struct unwinder *u, struct unwind_tables_stats *out);

/* Processes known (added, or met in a sample, and not removed), for self-metrics. */
size_t unwinder__process_count(const struct unwinder *u);
/* ELF files held open: those the known processes' sessions use. */
size_t unwinder__file_count(const struct unwinder *u);

/* Unwinds one sample into pcs (at most max_pcs entries). pcs[1] is the return address into
 * the allocator's direct caller, pcs[2] into its caller, ... (return addresses as they are, not
 * minus one: pass them to the symbolizer as return addresses).
 *   UNWIND_DWARF: CFI only.
 *   UNWIND_FP: the return address at sp, then the rbp chain through the copy.
 *   UNWIND_AUTO: CFI for every frame whose code has it, the frame pointer for the others.
 * Stack memory is read from the copy only; any other read fails and ends the walk. A pid never
 * added (or removed since) is added first, unless it has exited (then it gets no CFI and is
 * not kept); UNWIND_FP needs no process. A pc outside the process's snapshot makes it re-read
 * /proc/PID/maps (at most every UNWIND_REREAD_INTERVAL_MS while it lives) and, when that
 * found new modules, unwind again. An incomplete walk is never an error: what was found is
 * returned, with truncated set. Returns 0, -EINVAL (NULL arguments, an unknown mode), -ENOMEM. */
int unwinder__unwind(struct unwinder *u, const struct unwind_input *in, enum unwind_mode mode,
		     uint64_t *pcs, size_t max_pcs, struct unwind_result *out);

/* Miss-triggered re-reads of one process's maps are at least this far apart, so samples with
 * garbage pcs do not re-read /proc on every sample. */
#define UNWIND_REREAD_INTERVAL_MS 20

#endif
