/*
 * commands.h — the operator commands of the control socket beyond status
 * and reload: customers, contacts, events, imports, the calendar, `why`,
 * simulate, pause/resume, the outbox, alerts, reports, holdout, plugins and
 * metrics. Each is registered on the daemon's control server with its role:
 * queries for every peer, changes for admins only. The protocol of every
 * command is in docs/control-protocol.md.
 *
 * Everything runs on the loop thread and never waits: a forecast
 * (`simulate`) runs in a child `cadenced --simulate` process whose output is
 * collected as it comes and read back in slices (`simulate.output`); an
 * import arrives in chunks of lines, each committed in its own transactions,
 * and the customers it touched are handed to the scheduler shortly after.
 */
#ifndef CADENCE_COMMANDS_H
#define CADENCE_COMMANDS_H

#include "common.h"
#include "daemon.h"

typedef struct cad_commands cad_commands_t;

/* Error code of a request that would create what exists already. */
#define CAD_CONTROL_CONFLICT "conflict"

/* Most lines one import request may carry. */
#define CAD_COMMANDS_IMPORT_MAX_LINES 100000
/* Rejections named one by one per import request (all are counted). */
#define CAD_COMMANDS_IMPORT_MAX_ERRORS 100
/* Forecasts running at once, and the output kept per forecast. */
#define CAD_COMMANDS_SIMULATE_MAX_JOBS   2
#define CAD_COMMANDS_SIMULATE_MAX_OUTPUT (16 * 1024 * 1024)

/* Registers every command on cad_daemon_control(d) and, for the children and
 * timers it may start, a service "commands" that stops them at shutdown.
 * Call between cad_daemon_new and cad_daemon_run. Returns 0 and *out (free it
 * with cad_commands_free after cad_daemon_run has returned), or a negative
 * code with err. */
int cad_commands_register(cad_daemon_t *d, cad_commands_t **out, char *err);

/* Frees what the commands keep (finished forecasts, buffers). Call once the
 * daemon's loop has stopped; NULL-safe. */
void cad_commands_free(cad_commands_t *c);

#endif
