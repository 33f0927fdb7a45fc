/* The `allocscope count` and `allocscope gate` subcommands (docs/ci-gate.md): command line,
 * summary, the gate's table and CI reports. main.c hands them argv from the subcommand on. */
#ifndef ALLOCSCOPE_COUNT_COUNT_CLI_H
#define ALLOCSCOPE_COUNT_COUNT_CLI_H

#include <stdbool.h>

/* Whether name ("count", "gate") is one of these subcommands. */
bool count_cli_handles(const char *name);
/* argv[0] is the subcommand. Returns the process exit status: for count the command's own;
 * for gate 0 (within budget), 1 (over budget, or the command failed), 2 (usage, budget
 * syntax). */
int count_cli_main(int argc, char **argv);

#endif
