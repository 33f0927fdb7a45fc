/* The continuous agent: load the configuration, find target processes as they start, exec
 * and fork (and those already running), attach probes to each, and every interval write one
 * delta allocation profile per service to the configured sinks, with self-metrics on an HTTP
 * address (loopback unless metrics.allow_remote). SIGHUP reloads the configuration (an
 * invalid file keeps the running one); SIGTERM and SIGINT flush the partial interval, detach
 * everything and exit 0. */
#ifndef ALLOCSCOPE_DAEMON_H
#define ALLOCSCOPE_DAEMON_H


/* config_path: the file to load (--config FILE; a missing file is an error, as at a reload).
 * log_level_override: an enum log_level from --log-level, which wins over the file's
 * log.level, or -1. Returns the exit status: 0 after a clean stop, 1 when the agent could
 * not start. */
int daemon_run(const char *config_path, int log_level_override);

/* Loads the file and reports whether the agent would start with it, for `--check-config` (a
 * missing file is not valid: the agent needs one). 0 or 1. */
int daemon_check_config(const char *config_path);

#endif
