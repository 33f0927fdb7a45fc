/* Holding the capture's command at its exit (see exit_hold.h).
 *
 * The tracing thread waits with waitid: first peeking (WNOWAIT) for any change, so an exit
 * the hold did not see (SIGKILL skips the exit stop) ends the thread without reaping the
 * child, whose status the capture collects; then taking only the stop. A stop's si_status is
 * the tracee's ptrace exit code: the signal, with the event (PTRACE_EVENT_EXIT, or
 * PTRACE_EVENT_STOP for a group stop) in bits 8-15. */
#include "collect/exit_hold.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

struct exit_hold {
	pid_t pid;
	pthread_t thread;
	int held_pipe[2];    /* thread -> capture: one byte when the command is held */
	int release_pipe[2]; /* capture -> thread: one byte (or EOF) to let it go */
	int seize_result;    /* 0 or -errno, set before `started` is posted */
	pthread_mutex_t lock;
	pthread_cond_t started_cond;
	bool started, thread_running;
};

static void wait_for_release(struct exit_hold *h)
{
	char byte;

	while (read(h->release_pipe[0], &byte, 1) < 0 && errno == EINTR)
		;
}

static void *hold_thread(void *arg)
{
	struct exit_hold *h = arg;
	int ret = 0;

	if (ptrace(PTRACE_SEIZE, h->pid, NULL, (void *)(long)PTRACE_O_TRACEEXIT) != 0)
		ret = -errno;
	pthread_mutex_lock(&h->lock);
	h->seize_result = ret;
	h->started = true;
	pthread_cond_signal(&h->started_cond);
	pthread_mutex_unlock(&h->lock);
	if (ret)
		return NULL;

	for (;;) {
		siginfo_t si;
		int status, sig, event;

		memset(&si, 0, sizeof(si));
		if (waitid(P_PID, (id_t)h->pid, &si, WEXITED | WSTOPPED | WNOWAIT | __WALL) != 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (si.si_code == CLD_EXITED || si.si_code == CLD_KILLED ||
		    si.si_code == CLD_DUMPED)
			break; /* gone without an exit stop: the capture reaps it */
		memset(&si, 0, sizeof(si));
		if (waitid(P_PID, (id_t)h->pid, &si, WSTOPPED | WNOHANG | __WALL) != 0 ||
		    si.si_pid != h->pid)
			continue;
		status = si.si_status;
		sig = status & 0xff;
		event = (status >> 8) & 0xff;
		if (sig == SIGTRAP && event == PTRACE_EVENT_EXIT) {
			if (write(h->held_pipe[1], "x", 1) == 1)
				wait_for_release(h);
			ptrace(PTRACE_DETACH, h->pid, NULL, NULL);
			break;
		}
		if (event == PTRACE_EVENT_STOP) {
			/* A group stop (SIGSTOP, Ctrl-Z) stays stopped until SIGCONT; the other
			 * such traps (the notice of a SIGCONT, signal SIGTRAP) just go on. */
			if (sig == SIGTRAP || ptrace(PTRACE_LISTEN, h->pid, NULL, NULL) != 0)
				ptrace(PTRACE_CONT, h->pid, NULL, NULL);
			continue;
		}
		/* A signal on its way to the command: deliver it as if untraced. */
		ptrace(PTRACE_CONT, h->pid, NULL, (void *)(long)sig);
	}
	return NULL;
}

int exit_hold__new(pid_t pid, struct exit_hold **out, char *err, size_t err_len)
{
	struct exit_hold *h;
	int ret;

	*out = NULL;
	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->pid = pid;
	h->held_pipe[0] = h->held_pipe[1] = h->release_pipe[0] = h->release_pipe[1] = -1;
	pthread_mutex_init(&h->lock, NULL);
	pthread_cond_init(&h->started_cond, NULL);
	if (pipe2(h->held_pipe, O_CLOEXEC | O_NONBLOCK) || pipe2(h->release_pipe, O_CLOEXEC)) {
		ret = -errno;
		snprintf(err, err_len, "cannot hold pid %d at exit: %s", (int)pid, strerror(-ret));
		exit_hold__free(h);
		return ret;
	}
	ret = -pthread_create(&h->thread, NULL, hold_thread, h);
	if (ret) {
		snprintf(err, err_len, "cannot hold pid %d at exit: %s", (int)pid, strerror(-ret));
		exit_hold__free(h);
		return ret;
	}
	h->thread_running = true;
	pthread_mutex_lock(&h->lock);
	while (!h->started)
		pthread_cond_wait(&h->started_cond, &h->lock);
	ret = h->seize_result;
	pthread_mutex_unlock(&h->lock);
	if (ret) {
		snprintf(err, err_len,
			 "cannot trace pid %d to read its memory map at exit (%s): its libraries "
			 "may go unnamed if it exits within the first drain; allow ptrace "
			 "(kernel.yama.ptrace_scope below 3) to avoid that",
			 (int)pid, strerror(-ret));
		exit_hold__free(h);
		return ret;
	}
	*out = h;
	return 0;
}

int exit_hold__fd(const struct exit_hold *h)
{
	return h ? h->held_pipe[0] : -1;
}

void exit_hold__release(struct exit_hold *h)
{
	char byte;

	if (!h || h->release_pipe[1] < 0 || read(h->held_pipe[0], &byte, 1) != 1)
		return;
	close(h->release_pipe[1]);
	h->release_pipe[1] = -1;
}

void exit_hold__free(struct exit_hold *h)
{
	if (!h)
		return;
	if (h->release_pipe[1] >= 0) {
		close(h->release_pipe[1]); /* EOF releases a held command */
		h->release_pipe[1] = -1;
	}
	if (h->thread_running)
		pthread_join(h->thread, NULL);
	if (h->held_pipe[0] >= 0)
		close(h->held_pipe[0]);
	if (h->held_pipe[1] >= 0)
		close(h->held_pipe[1]);
	if (h->release_pipe[0] >= 0)
		close(h->release_pipe[0]);
	pthread_mutex_destroy(&h->lock);
	pthread_cond_destroy(&h->started_cond);
	free(h);
}
