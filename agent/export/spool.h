/* The on-disk spool of a push sink: profiles that could not be delivered yet (the endpoint is
 * down, or the in-memory queue is full) wait here, one file each, and survive a restart of
 * the agent. Files are written under a temporary name, synced and renamed, so a crash leaves
 * either a whole profile or nothing; every file carries a CRC-32 over its contents, so a file
 * cut short or damaged is recognised, removed and counted, never delivered or crashed on.
 *
 * File names are "profile-KEY.spool" with KEY the profile's 20-digit order key: name order is
 * delivery order. A file holds a small header (see spool.c) with the record's labels,
 * timestamps and delivery ID, then the gzipped pprof as the agent built it.
 *
 * The size limit counts the files' bytes. Past it the oldest profiles are dropped: a long
 * outage keeps its most recent history, which is also the part servers still accept (Pyroscope
 * refuses profiles older than its ingestion window). The profile being delivered (pinned) is
 * never dropped under the sender's feet.
 *
 * One process and one spool at a time own a directory: spool__lock() takes an exclusive
 * flock(2) on DIR/.lock; only spool__open() may be called before it succeeds. Not
 * thread-safe: the owner serialises calls. */
#ifndef ALLOCSCOPE_SPOOL_H
#define ALLOCSCOPE_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "export/sink.h"

/* Bounds a spool file must respect to be read back. Larger labels are never produced by the
 * agent (values are cut at 1 KiB); a file beyond them is damaged. */
#define SPOOL_MAX_LABELS	64
#define SPOOL_MAX_STRING	4096
#define SPOOL_MAX_PROFILE_BYTES (256u << 20)

/* A profile waiting for delivery, in memory or read back from the spool: one allocation,
 * freed with free(). */
struct queued_profile {
	uint64_t key;	/* delivery order: smaller first; unique per agent */
	uint8_t id[16]; /* the delivery ID (a UUID v4), the same on every retry */
	int64_t start_ns;
	int64_t duration_ns;
	char *service;
	struct profile_label *labels; /* point into the same allocation */
	size_t n_labels;
	uint8_t *pprof_gz;
	size_t pprof_gz_len;
};

/* Copies a record. Returns NULL when out of memory. */
struct queued_profile *queued_profile__new(const struct profile_record *record, uint64_t key,
					   const uint8_t id[16]);

struct spool;

/* Creates dir (mode 0750, with parents) if needed and checks that files can be created in it;
 * takes no lock and reads nothing. max_bytes: 0 means no limit. Returns 0 or -errno with a
 * sentence in err. */
int spool__open(const char *dir, uint64_t max_bytes, struct spool **out, char *err, size_t err_len);
/* Accepts NULL. Releases the lock; files stay. */
void spool__free(struct spool *spool);
const char *spool__dir(const struct spool *spool);

/* Names the spool's user in other spools' messages ("pyroscope sink \"cloud\""). */
#define SPOOL_OWNER_MAX 96
void spool__set_owner(struct spool *spool, const char *owner);

/* Takes the directory's lock without waiting: 0, -EWOULDBLOCK when someone else holds it,
 * or another -errno. Thread-safe across spools (each spool still has one user). */
int spool__lock(struct spool *spool);
/* After -EWOULDBLOCK: the owner of the spool of this process that holds the lock (the same
 * directory, however spelled), or NULL when it is another process. */
const char *spool__holder(const struct spool *spool);
bool spool__locked(const struct spool *spool);

/* Reads the directory (locked) into the index: profile files by key. A temporary file left by
 * a write that a crash interrupted (kill -9 between the sync and the rename) is put back in
 * the spool when it holds a whole profile (magic, lengths, CRC and key all check out), and
 * removed otherwise (see spool__last_scan). *max_key is the largest key found (0 when
 * none). */
int spool__scan(struct spool *spool, uint64_t *max_key);
/* What the last scan found of interrupted writes: whole profiles recovered, and torn files
 * removed (their profiles died with the process that was writing them). */
void spool__last_scan(const struct spool *spool, size_t *recovered, size_t *torn);
/* True when the index may miss files on disk: a scan ran out of memory, or spool__write could
 * not index the file it wrote (the write still counts as done). The owner scans again to
 * learn of them. */
bool spool__needs_scan(const struct spool *spool);

size_t spool__count(const struct spool *spool);
uint64_t spool__bytes(const struct spool *spool);
/* The smallest key in the index; false when empty. */
bool spool__oldest(const struct spool *spool, uint64_t *key);

/* The profile with this key, if any, is never dropped by the size limit; 0 unpins. */
void spool__pin(struct spool *spool, uint64_t key);

/* Writes a profile (locked spool). To make room, profiles are dropped oldest first, the new one
 * included when it is the oldest; *dropped counts the ones removed from the index, and
 * *self_dropped says the new one was not kept (then the return is still 0). Returns 0, or
 * -errno when the file could not be written (the index is unchanged then, apart from
 * drops). A file written whole but left out of the index for want of memory still returns 0
 * (see spool__needs_scan). */
int spool__write(struct spool *spool, const struct queued_profile *p, uint64_t *dropped,
		 bool *self_dropped);

/* Reads a profile back. -EBADMSG: the file is damaged; it has been removed from disk and
 * index. -ENOENT: it disappeared (removed from the index). Other -errno: left in place. */
int spool__read(struct spool *spool, uint64_t key, struct queued_profile **out);

/* Deletes a profile's file and index entry (delivered, or refused for good). */
int spool__remove(struct spool *spool, uint64_t key);

/* The file format alone, for tests and tools: encode into a malloc'ed buffer, decode one.
 * decode returns 0 or -EBADMSG. */
int spool__encode(const struct queued_profile *p, uint8_t **data, size_t *len);
int spool__decode(const uint8_t *data, size_t len, struct queued_profile **out);

#endif
