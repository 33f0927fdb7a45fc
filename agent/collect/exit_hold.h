/* Holding a capture's command at its exit, its memory map still in place, until the capture
 * has read it. A short command exits before the capture drains its first samples, and its map
 * read at exec is incomplete (the loader maps libc after exec returns), so without a read at
 * exit its libc frames go unnamed and a stack copy's CFI walk loses frames.
 *
 * The command is traced (PTRACE_SEIZE with PTRACE_O_TRACEEXIT) by a thread of its own, since
 * only the tracing thread may issue ptrace requests: the thread passes every signal on at once
 * (group stops stay stopped, with PTRACE_LISTEN), and at the exit stop writes to the fd
 * exit_hold__fd returns and waits for exit_hold__release, then detaches. Nothing else of the
 * command changes (no fork, exec or syscall stops; it is not reaped here). */
#ifndef ALLOCSCOPE_COLLECT_EXIT_HOLD_H
#define ALLOCSCOPE_COLLECT_EXIT_HOLD_H

#include <stddef.h>
#include <sys/types.h>

struct exit_hold;

/* Starts tracing pid, a child of the caller that has not exec'ed yet. -errno with a sentence
 * in err (ptrace refused: Yama's ptrace_scope 3, or no CAP_SYS_PTRACE for another user's
 * process); the command then runs without the hold. */
int exit_hold__new(pid_t pid, struct exit_hold **out, char *err, size_t err_len);
/* Readable when the command is held at its exit (then call exit_hold__release). */
int exit_hold__fd(const struct exit_hold *h);
/* Lets a held command finish exiting; a no-op when it is not held. */
void exit_hold__release(struct exit_hold *h);
/* Releases the command if held, stops tracing, and frees. Accepts NULL. */
void exit_hold__free(struct exit_hold *h);

#endif
