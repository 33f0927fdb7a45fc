/* Secrets the agent sends: a push sink's password and bearer token (password_file / token_file,
 * or password_env / token_env) and the Kubernetes service account token. A file is read again
 * when it changes (secrets rotate: the kubelet swaps a projected token, an operator rewrites a
 * password file), checked against what its header may hold, and kept trimmed of the blanks and
 * line ends editors add. Messages name the file or variable, never the value, and every copy of
 * a value is wiped before it is freed. One secret belongs to one thread at a time. */
#ifndef ALLOCSCOPE_UTIL_SECRET_H
#define ALLOCSCOPE_UTIL_SECRET_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <time.h>

/* What a secret may be, and how messages name it. */
struct secret_rules {
	const char *what;	  /* "password_file", "the service account token" */
	size_t max_bytes;	  /* a longer file is refused with -EFBIG */
	bool bearer_token;	  /* only the printable ASCII a token has (no blanks); otherwise
				     anything but a line break or a NUL byte */
	const char *unreadable_hint; /* appended to a file's open failure, or NULL */
};

struct secret {
	struct secret_rules rules;
	char *path;  /* a file, re-read when it changes; NULL for a variable or none */
	char *value; /* NULL until read, or when there is none */
	struct timespec mtime;
	ino_t ino;
	off_t size;
};

/* Takes the secret from the file path (read now: 0 or -errno with a sentence in err, -ENOMEM).
 * The secret is set up even when the read fails, so secret_refresh may try again. */
int secret_from_file(struct secret *s, const struct secret_rules *rules, const char *path,
		     char *err, size_t err_len);
/* Takes the secret from the environment variable name: -ENOENT when unset or empty, -EINVAL
 * when its value breaks the rules. what names the key in messages ("password_env"). */
int secret_from_env(struct secret *s, const struct secret_rules *rules, const char *name,
		    char *err, size_t err_len);
/* Reads the file again when its inode, size or mtime changed; nothing for a variable. 0 or
 * -errno with a sentence in err; on failure the value in use stays. */
int secret_refresh(struct secret *s, char *err, size_t err_len);
/* Wipes and frees; the struct may be set up again. Accepts a zeroed secret. */
void secret_free(struct secret *s);

#endif
