/*
 * commands.c — the operator commands of the control socket (see commands.h).
 *
 * Each command is a handler: it checks the request's fields (an unknown
 * field is refused, so a typo never silently does nothing), asks the store,
 * and answers a JSON object. Changes to customers, contacts and events go
 * through the loader (loader.h) one row at a time, so the socket and an
 * import file accept exactly the same shapes with the same validation and
 * the same messages. A changed customer is handed to the scheduler at once;
 * customers touched by an import are found afterwards by their next
 * evaluation time (the store sets it to the import's clock) and handed over
 * from a short timer, in one pass however many chunks arrived.
 *
 * Forecasts run in a child process, `cadenced --simulate`, with the daemon's
 * config file and state directory: the engine runs there over an in-memory
 * copy of the store, and the loop here only copies pipe output into a buffer.
 * A forecast is a job: `simulate` starts it and `simulate.output` reads its
 * output from an offset until it is done. Shutdown kills running forecasts.
 */
#include "commands.h"

#include "control.h"
#include "loader.h"
#include "log.h"
#include "metrics.h"
#include "report.h"
#include "tz.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define RESCAN_DELAY_MS       200
#define RESCAN_MAX_WAIT_MS    5000
#define DEFAULT_LIST_LIMIT    100
#define MAX_LIST_LIMIT        100000
#define SIMULATE_SLICE        (192 * 1024)
#define SIMULATE_KEEP_SECONDS 600
#define SIMULATE_STDERR_MAX   4096
#define REPORT_DEFAULT_PERIOD (30 * CAD_DAY)

typedef struct sim_job sim_job_t;

struct sim_job {
    cad_commands_t *owner;
    int id;
    uv_process_t proc;
    uv_pipe_t out, err;
    int open_handles;
    bool exited;
    int64_t exit_status;
    int term_signal;
    char *buf; /* stdout */
    size_t len, cap;
    bool truncated;
    char errtext[SIMULATE_STDERR_MAX]; /* stderr, first bytes */
    size_t errlen;
    time_t finished_at;
    char customer[CAD_ID_MAX + 1];
    int days;
    sim_job_t *next;
};

struct cad_commands {
    cad_daemon_t *d;
    uv_timer_t rescan;
    bool rescan_init, rescan_armed;
    bool rescan_recheck; /* an import of customers or contacts: recheck claimed touches */
    cad_time_t rescan_from;
    uint64_t rescan_first_ms; /* loop time of the first chunk the armed timer covers */
    sim_job_t *jobs;
    int next_job;
    bool stopping, stop_reported;
    int open_handles; /* rescan timer and jobs' handles */
    /* The loop turn's write group (event.add): one store batch, committed
     * by the control server once the turn's requests are read. */
    bool group_open;
    bool group_lost; /* the store rolled the group back before its commit */
    uint64_t group_serial;
    char group_error[CAD_ERRBUF];
    int64_t *group_keys; /* customers to evaluate once the group is committed */
    int n_group_keys, cap_group_keys;
};

/* ---- helpers ------------------------------------------------------------- */

static cad_time_t now_seconds(void)
{
    return (cad_time_t)time(NULL);
}

/* Refuses any request field not in `allowed` (NULL-terminated). */
static int check_fields(json_t *req, const char *const *allowed, cad_control_error_t *error)
{
    const char *key;
    json_t *v;
    json_object_foreach(req, key, v)
    {
        if (strcmp(key, "cmd") == 0 || strcmp(key, "id") == 0)
            continue;
        bool ok = false;
        for (int i = 0; allowed[i]; i++)
            if (strcmp(allowed[i], key) == 0)
                ok = true;
        if (!ok) {
            char list[256] = "";
            size_t n = 0;
            for (int i = 0; allowed[i] && n < sizeof(list); i++)
                n +=
                    (size_t)snprintf(list + n, sizeof(list) - n, "%s%s", i ? ", " : "", allowed[i]);
            cad_control_fail(error, CAD_CONTROL_BAD_REQUEST,
                             "unknown field \"%s\" (this command takes: %s)", key,
                             allowed[0] ? list : "no arguments");
            return -CAD_EINVAL;
        }
    }
    return 0;
}

static int arg_limit(json_t *req, int def, int *out, cad_control_error_t *error)
{
    int64_t v = def;
    if (cad_control_arg_int(req, "limit", false, &v, error) != 0)
        return -CAD_EINVAL;
    if (v < 1 || v > MAX_LIST_LIMIT) {
        cad_control_fail(error, CAD_CONTROL_BAD_REQUEST, "field limit: must be 1 to %d, not %lld",
                         MAX_LIST_LIMIT, (long long)v);
        return -CAD_EINVAL;
    }
    *out = (int)v;
    return 0;
}

/* A time argument: absent keeps *out; ISO 8601 or now[+-]DURATION. */
static int arg_time(json_t *req, const char *key, cad_time_t now, cad_time_t *out,
                    cad_control_error_t *error)
{
    json_t *v = json_object_get(req, key);
    if (!v || json_is_null(v))
        return 0;
    if (json_is_integer(v)) {
        *out = (cad_time_t)json_integer_value(v);
        return 0;
    }
    if (!json_is_string(v)) {
        cad_control_fail(error, CAD_CONTROL_BAD_REQUEST,
                         "field %s: must be a time (\"2026-03-01\", \"now-30d\" or Unix seconds)",
                         key);
        return -CAD_EINVAL;
    }
    char err[CAD_ERRBUF];
    if (cad_import_time_parse(json_string_value(v), now, out, err) != 0) {
        cad_control_fail(error, CAD_CONTROL_BAD_REQUEST, "field %s: %s", key, err);
        return -CAD_EINVAL;
    }
    return 0;
}

/* "2026-03-08 09:30 Europe/London" (or UTC when the zone is unknown). */
static void format_local(const char *zone, cad_time_t t, char *buf, size_t size)
{
    if (t <= 0 || t == CAD_TIME_NEVER) {
        snprintf(buf, size, "%s", t == CAD_TIME_NEVER ? "never" : "-");
        return;
    }
    char err[CAD_ERRBUF];
    const cad_tz_t *tz = zone && *zone ? cad_tz_get(zone, err) : NULL;
    if (!tz)
        tz = cad_tz_utc();
    cad_local_time_t lt;
    cad_tz_local(tz, t, &lt);
    snprintf(buf, size, "%04d-%02d-%02d %02d:%02d %s", lt.year, lt.month, lt.day, lt.hour,
             lt.minute, cad_tz_name(tz));
}

static json_t *time_or_null(cad_time_t t)
{
    return t > 0 && t != CAD_TIME_NEVER ? json_integer((json_int_t)t) : json_null();
}

/* Maps a store error to a reply. */
static json_t *store_fail(cad_control_error_t *error, int rc, const char *err)
{
    if (rc == -CAD_ENOTFOUND)
        return cad_control_fail(error, CAD_CONTROL_NOT_FOUND, "%s", err);
    if (rc == -CAD_EINVAL)
        return cad_control_fail(error, CAD_CONTROL_BAD_REQUEST, "%s", err);
    if (rc == -CAD_EEXIST)
        return cad_control_fail(error, CAD_CONTROL_CONFLICT, "%s", err);
    cad_log_err("control: store error: %s", err);
    return cad_control_fail(error, CAD_CONTROL_INTERNAL, "%s", err);
}

static json_t *oom(cad_control_error_t *error)
{
    return cad_control_fail(error, CAD_CONTROL_INTERNAL, "out of memory");
}

/* ---- group commit ------------------------------------------------------------ */

static bool group_intact(cad_commands_t *c)
{
    cad_store_t *st = cad_daemon_store(c->d);
    return cad_store_in_batch(st) && cad_store_batch_serial(st) == c->group_serial;
}

/* Notices a group the store rolled back (a failed write inside it). */
static void group_check(cad_commands_t *c)
{
    if (c->group_open && !c->group_lost && !group_intact(c)) {
        c->group_lost = true;
        snprintf(c->group_error, sizeof(c->group_error),
                 "the store rolled back the writes of this loop turn after a failure");
    }
}

/* Joins the loop turn's write group: the first caller of the turn opens a
 * store batch, and the control server commits it once every request of the
 * turn has been read, or before any other command runs (many event.add
 * requests, from one client or several, share one fsync; each reply waits
 * for it). Fails once the store has rolled the group back (disk full, I/O
 * error) until that has been reported. */
static int group_join(cad_commands_t *c, cad_control_error_t *error)
{
    cad_store_t *st = cad_daemon_store(c->d);
    group_check(c);
    if (c->group_lost) {
        cad_control_fail(error, CAD_CONTROL_INTERNAL, "not stored: %s", c->group_error);
        return -CAD_ESTORE;
    }
    if (c->group_open)
        return 0;
    if (cad_store_in_batch(st)) { /* not ours: its commit would not answer for this write */
        cad_control_fail(error, CAD_CONTROL_BUSY,
                         "the store is busy with another batch; try again");
        return -CAD_EBUSY;
    }
    char err[CAD_ERRBUF];
    int rc = cad_store_batch_begin(st, err);
    if (rc < 0) {
        store_fail(error, rc, err);
        return rc;
    }
    c->group_open = true;
    c->group_serial = cad_store_batch_serial(st);
    return 0;
}

static void changed(cad_commands_t *c, int64_t key);

/* The customer is evaluated once the group's commit has kept its change. */
static void group_changed(cad_commands_t *c, int64_t key)
{
    if (!c->group_open) {
        changed(c, key);
        return;
    }
    if (c->n_group_keys == c->cap_group_keys) {
        int cap = c->cap_group_keys ? c->cap_group_keys * 2 : 64;
        int64_t *k = realloc(c->group_keys, (size_t)cap * sizeof(*k));
        if (!k) { /* evaluated at once: if the commit fails, that finds nothing new */
            changed(c, key);
            return;
        }
        c->group_keys = k;
        c->cap_group_keys = cap;
    }
    c->group_keys[c->n_group_keys++] = key;
}

static int64_t group_uncommitted(void *arg)
{
    cad_commands_t *c = arg;
    group_check(c);
    if (!c->group_open && !c->group_lost)
        return 0;
    return 1 + cad_store_changes(cad_daemon_store(c->d));
}

static int group_commit(void *arg, char *err)
{
    cad_commands_t *c = arg;
    bool open = c->group_open, lost = c->group_lost;
    int n_keys = c->n_group_keys;
    c->group_open = c->group_lost = false;
    c->n_group_keys = 0;
    int rc = 0;
    if (lost)
        rc = cad_fail(err, CAD_ESTORE, "%s", c->group_error);
    else if (open && !group_intact(c))
        rc = cad_fail(err, CAD_ESTORE,
                      "the store rolled back the writes of this loop turn after a failure");
    else if (open)
        rc = cad_store_batch_commit(cad_daemon_store(c->d), err);
    for (int i = 0; rc == 0 && i < n_keys; i++)
        changed(c, c->group_keys[i]);
    return rc;
}

/* ---- rescheduling after changes ------------------------------------------ */

static void on_handle_closed(uv_handle_t *h);

static void changed(cad_commands_t *c, int64_t key)
{
    cad_scheduler_t *s = cad_daemon_scheduler(c->d);
    if (s && !c->stopping)
        cad_scheduler_customer_changed(s, key);
}

/* Consent, a suppression, a pause or a contact changed for customer `key`
 * (0: any customer): the customer is evaluated again, and touches claimed
 * but not yet on the wire are checked again before they go. */
static void stoppers_changed(cad_commands_t *c, int64_t key)
{
    if (key)
        changed(c, key);
    if (!c->stopping)
        cad_dispatch_recheck(cad_daemon_dispatch(c->d), key);
}

static void rescan_one(int64_t key, void *arg)
{
    changed(arg, key);
}

static void on_rescan(uv_timer_t *t)
{
    cad_commands_t *c = t->data;
    c->rescan_armed = false;
    char err[CAD_ERRBUF];
    int n = cad_store_due_between_foreach(cad_daemon_store(c->d), c->rescan_from, now_seconds(),
                                          rescan_one, c, err);
    if (n < 0)
        cad_log_err("import: cannot find the customers to evaluate: %s", err);
    else
        cad_log_debug("import: customers handed to the scheduler count=%d", n);
    /* Once for many chunks, so a long import does not keep taking back
     * every channel's claimed touches. */
    if (c->rescan_recheck && !c->stopping)
        cad_dispatch_recheck(cad_daemon_dispatch(c->d), 0);
    c->rescan_recheck = false;
}

/* Customers whose next evaluation was set to `since` or later by a change
 * are handed to the scheduler from a timer, once for many chunks: the timer
 * restarts with every chunk (so evaluations do not compete with a running
 * import for the loop) but fires at most RESCAN_MAX_WAIT_MS after the first
 * chunk it covers. */
static void rescan_soon(cad_commands_t *c, cad_time_t since)
{
    if (c->stopping)
        return;
    if (!c->rescan_init) {
        uv_timer_init(cad_daemon_loop(c->d), &c->rescan);
        c->rescan.data = c;
        c->rescan_init = true;
        c->open_handles++;
    }
    uint64_t now_ms = uv_now(cad_daemon_loop(c->d));
    if (!c->rescan_armed) {
        c->rescan_armed = true;
        c->rescan_from = since;
        c->rescan_first_ms = now_ms;
    } else if (since < c->rescan_from) {
        c->rescan_from = since;
    }
    uint64_t waited = now_ms - c->rescan_first_ms;
    uint64_t delay = waited >= RESCAN_MAX_WAIT_MS ? 0 : RESCAN_MAX_WAIT_MS - waited;
    if (delay > RESCAN_DELAY_MS)
        delay = RESCAN_DELAY_MS;
    uv_timer_start(&c->rescan, on_rescan, delay, 0);
}

/* ---- one row through the loader ----------------------------------------- */

typedef struct one_row {
    char message[CAD_ERRBUF];
} one_row_t;

static void one_row_reject(const char *message, void *arg)
{
    one_row_t *o = arg;
    /* "request:1: field x: ..." -> "field x: ..." */
    const char *p = strstr(message, ":1: ");
    snprintf(o->message, sizeof(o->message), "%s", p ? p + 4 : message);
}

/* Writes one object through cad_import. Returns 0 (accepted), 1 (a
 * duplicate event) or NULL-reply after filling error. */
static int import_object(cad_commands_t *c, json_t *obj, enum cad_import_kind kind,
                         const char *what, cad_control_error_t *error)
{
    char *line = json_dumps(obj, JSON_COMPACT);
    if (!line) {
        oom(error);
        return -CAD_ENOMEM;
    }
    FILE *in = fmemopen(line, strlen(line), "r");
    if (!in) {
        free(line);
        oom(error);
        return -CAD_ENOMEM;
    }
    one_row_t o = {""};
    cad_import_options_t io = {
        .kind = kind,
        .format = CAD_IMPORT_JSONL,
        .source = "request",
        .now = now_seconds(),
        .on_reject = one_row_reject,
        .arg = &o,
    };
    cad_import_report_t rep;
    char err[CAD_ERRBUF] = "";
    int rc =
        cad_import(cad_daemon_store(c->d), &cad_daemon_config(c->d)->playbook, in, &io, &rep, err);
    fclose(in);
    free(line);
    if (rc != 0) {
        /* "request:1: store ...: ..." -> "store ...: ..." */
        const char *p = strncmp(err, "request:1: ", 11) == 0 ? err + 11 : err;
        store_fail(error, rc, p);
        return rc;
    }
    if (rep.rejected > 0) {
        cad_control_fail(error, CAD_CONTROL_BAD_REQUEST, "%s: %s", what, o.message);
        return -CAD_EINVAL;
    }
    return rep.duplicates > 0 ? 1 : 0;
}

static int object_arg(json_t *req, const char *key, json_t **out, cad_control_error_t *error)
{
    json_t *v = json_object_get(req, key);
    if (!json_is_object(v)) {
        cad_control_fail(error, CAD_CONTROL_BAD_REQUEST, "field %s: %s", key,
                         v ? "must be an object" : "required");
        return -CAD_EINVAL;
    }
    *out = v;
    return 0;
}

/* The "id" (or `key`) string of an object argument. */
static const char *object_id(json_t *obj, const char *key, const char *what,
                             cad_control_error_t *error)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_string(v) || !*json_string_value(v)) {
        cad_control_fail(error, CAD_CONTROL_BAD_REQUEST, "%s.%s: %s", what, key,
                         v ? "must be a non-empty string" : "required");
        return NULL;
    }
    return json_string_value(v);
}

/* ---- customers ------------------------------------------------------------ */

static json_t *customer_json(const cad_customer_row_t *row)
{
    char local[96];
    format_local(row->timezone, row->next_eval, local, sizeof(local));
    json_error_t jerr;
    json_t *attrs = json_loads(row->attributes, 0, &jerr);
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:b, s:I, s:I, s:o, s:s}", "id", row->id,
                     "name", row->name, "timezone", row->timezone, "stage", row->stage, "segment",
                     row->segment, "interests", row->interests, "attributes",
                     attrs ? attrs : json_object(), "paused", row->paused, "created_at",
                     (json_int_t)row->created_at, "updated_at", (json_int_t)row->updated_at,
                     "next_eval", time_or_null(row->next_eval), "next_eval_local", local);
}

static json_t *customer_change(cad_commands_t *c, json_t *req, bool add, cad_control_error_t *error)
{
    static const char *const fields[] = {"customer", NULL};
    json_t *obj;
    if (check_fields(req, fields, error) != 0 || object_arg(req, "customer", &obj, error) != 0)
        return NULL;
    const char *id = object_id(obj, "id", "customer", error);
    if (!id)
        return NULL;
    cad_store_t *st = cad_daemon_store(c->d);
    int64_t key;
    char err[CAD_ERRBUF];
    int rc = cad_store_customer_key(st, id, &key, err);
    if (rc != 0 && rc != -CAD_ENOTFOUND)
        return store_fail(error, rc, err);
    if (add && rc == 0)
        return cad_control_fail(error, CAD_CONTROL_CONFLICT,
                                "customer '%s' exists already (customer.update changes it)", id);
    if (!add && rc != 0)
        return cad_control_fail(error, CAD_CONTROL_NOT_FOUND,
                                "customer '%s' does not exist (customer.add creates it)", id);
    if (import_object(c, obj, CAD_IMPORT_CUSTOMERS, "customer", error) < 0)
        return NULL;
    if ((rc = cad_store_customer_key(st, id, &key, err)) != 0)
        return store_fail(error, rc, err);
    if (add) /* a new customer has no touch to stop */
        changed(c, key);
    else
        stoppers_changed(c, key);
    return json_pack("{s:s, s:b}", "customer", id, add ? "added" : "updated", 1);
}

static json_t *cmd_customer_add(json_t *req, const cad_control_peer_t *peer, void *arg,
                                cad_control_error_t *error)
{
    (void)peer;
    return customer_change(arg, req, true, error);
}

static json_t *cmd_customer_update(json_t *req, const cad_control_peer_t *peer, void *arg,
                                   cad_control_error_t *error)
{
    (void)peer;
    return customer_change(arg, req, false, error);
}

static void collect_customer(const cad_customer_row_t *row, void *arg)
{
    json_t *item = customer_json(row);
    if (item)
        json_array_append_new(arg, item);
}

static void collect_contact(const cad_contact_row_t *row, void *arg)
{
    json_t *consent = json_object();
    if (!consent)
        return;
    json_object_set_new(consent, "email",
                        row->email_consent < 0 ? json_null() : json_boolean(row->email_consent));
    json_object_set_new(consent, "sms",
                        row->sms_consent < 0 ? json_null() : json_boolean(row->sms_consent));
    json_t *item =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:s}", "id", row->id, "name", row->name,
                  "first_name", row->first_name, "roles", row->roles, "email", row->email, "phone",
                  row->phone, "consent", consent, "unusable", row->unusable);
    if (item)
        json_array_append_new(arg, item);
}

static json_t *cmd_customer_show(json_t *req, const cad_control_peer_t *peer, void *arg,
                                 cad_control_error_t *error)
{
    (void)peer;
    cad_commands_t *c = arg;
    static const char *const fields[] = {"customer", NULL};
    const char *id = NULL;
    if (check_fields(req, fields, error) != 0 ||
        cad_control_arg_string(req, "customer", true, &id, error) != 0)
        return NULL;
    json_t *one = json_array(), *contacts = json_array();
    char err[CAD_ERRBUF];
    cad_store_t *st = cad_daemon_store(c->d);
    int rc = one && contacts ? cad_store_customer_get(st, id, collect_customer, one, err) : 0;
    if (rc == 0 && one && contacts)
        rc = cad_store_contacts_foreach(st, id, collect_contact, contacts, err);
    if (rc < 0 || !one || !contacts || json_array_size(one) != 1) {
        json_decref(one);
        json_decref(contacts);
        return rc < 0 ? store_fail(error, rc, err) : oom(error);
    }
    json_t *result = json_incref(json_array_get(one, 0));
    json_decref(one);
    json_object_set_new(result, "contacts", contacts);
    return result;
}

static json_t *cmd_customer_list(json_t *req, const cad_control_peer_t *peer, void *arg,
                                 cad_control_error_t *error)
{
    (void)peer;
    cad_commands_t *c = arg;
    static const char *const fields[] = {"stage", "segment", "limit", NULL};
    const char *stage = NULL, *segment = NULL;
    int limit;
    if (check_fields(req, fields, error) != 0 ||
        cad_control_arg_string(req, "stage", false, &stage, error) != 0 ||
        cad_control_arg_string(req, "segment", false, &segment, error) != 0 ||
        arg_limit(req, DEFAULT_LIST_LIMIT, &limit, error) != 0)
        return NULL;
    if (stage && cad_stage_parse(stage) < 0)
        return cad_control_fail(error, CAD_CONTROL_BAD_REQUEST,
                                "field stage: unknown stage '%s' (prospect, onboarding, active, "
                                "at_risk, former)",
                                stage);
    json_t *list = json_array();
    if (!list)
        return oom(error);
    char err[CAD_ERRBUF];
    int n = cad_store_customers_foreach(cad_daemon_store(c->d), stage, segment, limit + 1,
                                        collect_customer, list, err);
    if (n < 0) {
        json_decref(list);
        return store_fail(error, n, err);
    }
    bool more = json_array_size(list) > (size_t)limit;
    if (more)
        json_array_remove(list, (size_t)limit);
    return json_pack("{s:o, s:b}", "customers", list, "more", more);
}

/* ---- contacts and consent -------------------------------------------------- */

static json_t *contact_change(cad_commands_t *c, json_t *req, bool add, cad_control_error_t *error)
{
    static const char *const fields[] = {"contact", NULL};
    json_t *obj;
    if (check_fields(req, fields, error) != 0 || object_arg(req, "contact", &obj, error) != 0)
        return NULL;
    const char *id = object_id(obj, "id", "contact", error);
    if (!id)
        return NULL;
    cad_store_t *st = cad_daemon_store(c->d);
    int64_t old_customer = 0, key;
    char owner[CAD_ID_MAX + 1] = "", err[CAD_ERRBUF];
    int rc = cad_store_contact_customer(st, id, &old_customer, owner, err);
    if (rc != 0 && rc != -CAD_ENOTFOUND)
        return store_fail(error, rc, err);
    if (add && rc == 0)
        return cad_control_fail(error, CAD_CONTROL_CONFLICT,
                                "contact '%s' exists already (contact.update changes it)", id);
    if (!add && rc != 0)
        return cad_control_fail(error, CAD_CONTROL_NOT_FOUND,
                                "contact '%s' does not exist (contact.add creates it)", id);
    json_t *row = json_deep_copy(obj);
    if (!row)
        return oom(error);
    if (!json_object_get(row, "customer") && !add)
        json_object_set_new(row, "customer", json_string(owner));
    json_t *cust = json_object_get(row, "customer");
    if (!json_is_string(cust)) {
        json_decref(row);
        return cad_control_fail(error, CAD_CONTROL_BAD_REQUEST, "contact.customer: %s",
                                cust ? "must be a string" : "required");
    }
    if ((rc = cad_store_customer_key(st, json_string_value(cust), &key, err)) != 0) {
        json_decref(row);
        return store_fail(error, rc, err);
    }
    rc = import_object(c, row, CAD_IMPORT_CONTACTS, "contact", error);
    json_decref(row);
    if (rc < 0)
        return NULL;
    if (add) /* a new contact is on no touch yet */
        changed(c, key);
    else
        stoppers_changed(c, key);
    if (old_customer && old_customer != key)
        stoppers_changed(c, old_customer);
    return json_pack("{s:s, s:b}", "contact", id, add ? "added" : "updated", 1);
}

static json_t *cmd_contact_add(json_t *req, const cad_control_peer_t *peer, void *arg,
                               cad_control_error_t *error)
{
    (void)peer;
    return contact_change(arg, req, true, error);
}

static json_t *cmd_contact_update(json_t *req, const cad_control_peer_t *peer, void *arg,
                                  cad_control_error_t *error)
{
    (void)peer;
    return contact_change(arg, req, false, error);
}

static json_t *cmd_contact_consent(json_t *req, const cad_control_peer_t *peer, void *arg,
                                   cad_control_error_t *error)
{
    (void)peer;
    cad_commands_t *c = arg;
    static const char *const fields[] = {"contact", "kind", "opted_in", "source", "at", NULL};
    const char *contact = NULL, *kind = NULL, *source = NULL;
    bool opted_in = false;
    cad_time_t now = now_seconds(), at = now;
    if (check_fields(req, fields, error) != 0 ||
        cad_control_arg_string(req, "contact", true, &contact, error) != 0 ||
        cad_control_arg_string(req, "kind", true, &kind, error) != 0 ||
        cad_control_arg_bool(req, "opted_in", true, &opted_in, error) != 0 ||
        cad_control_arg_string(req, "source", false, &source, error) != 0 ||
        arg_time(req, "at", now, &at, error) != 0)
        return NULL;
    if (strcmp(kind, "email") != 0 && strcmp(kind, "sms") != 0)
        return cad_control_fail(error, CAD_CONTROL_BAD_REQUEST,
                                "field kind: '%s' is not a consent kind (email, sms)", kind);
    if (at > now + CAD_DAY)
        return cad_control_fail(error, CAD_CONTROL_BAD_REQUEST,
                                "field at: a consent cannot be given in the future");
    cad_store_t *st = cad_daemon_store(c->d);
    int64_t key;
    char owner[CAD_ID_MAX + 1], err[CAD_ERRBUF];
    int rc = cad_store_contact_customer(st, contact, &key, owner, err);
    if (rc != 0)
        return store_fail(error, rc, err);
    cad_consent_input_t in = {
        .kind = kind, .opted_in = opted_in, .at = at, .source = source ? source : "operator"};
    if ((rc = cad_store_consent_set(st, contact, &in, err)) != 0)
        return store_fail(error, rc, err);
    if (opted_in)
        changed(c, key);
    else
        stoppers_changed(c, key);
    return json_pack("{s:s, s:s, s:b, s:s}", "contact", contact, "kind", kind, "opted_in", opted_in,
                     "customer", owner);
}

/* Clears the mark a permanent failure left on a contact's channel (the
 * provider was wrong, the mailbox is back); the customer is re-evaluated. */
static json_t *cmd_contact_usable(json_t *req, const cad_control_peer_t *peer, void *arg,
                                  cad_control_error_t *error)
{
    cad_commands_t *c = arg;
    static const char *const fields[] = {"contact", "channel", NULL};
    const char *contact = NULL, *channel = NULL;
    if (check_fields(req, fields, error) != 0 ||
        cad_control_arg_string(req, "contact", true, &contact, error) != 0 ||
        cad_control_arg_string(req, "channel", true, &channel, error) != 0)
        return NULL;
    cad_store_t *st = cad_daemon_store(c->d);
    int64_t key;
    char owner[CAD_ID_MAX + 1], err[CAD_ERRBUF];
    int rc = cad_store_contact_customer(st, contact, &key, owner, err);
    if (rc != 0)
        return store_fail(error, rc, err);
    rc = cad_store_contact_mark_usable(st, contact, channel, now_seconds(), err);
    /* The contact exists: not found means no mark, maybe no such channel. */
    if (rc == -CAD_ENOTFOUND &&
        cad_playbook_channel(&cad_daemon_config(c->d)->playbook, channel) < 0)
        return cad_control_fail(error, CAD_CONTROL_NOT_FOUND,
                                "field channel: no channel '%s' in the configuration", channel);
    if (rc != 0)
        return store_fail(error, rc, err);
    changed(c, key);
    char v[CAD_LOG_VALUE_MAX];
    cad_log_info("control: contact's channel usable again contact=%s channel=%s uid=%u pid=%d",
                 cad_log_value(contact, v), channel, (unsigned)peer->uid, (int)peer->pid);
    return json_pack("{s:s, s:s, s:s, s:b}", "contact", contact, "channel", channel, "customer",
                     owner, "usable", 1);
}

/* ---- the suppression list (R10) -------------------------------------------- */

static void collect_suppression(const char *address, const char *reason, cad_time_t at, void *arg)
{
    json_t *item =
        json_pack("{s:s, s:s, s:I}", "address", address, "reason", reason, "at", (json_int_t)at);
    if (item)
        json_array_append_new(arg, item);
}

static json_t *cmd_suppression_add(json_t *req, const cad_control_peer_t *peer, void *arg,
                                   cad_control_error_t *error)
{
    cad_commands_t *c = arg;
    static const char *const fields[] = {"address", "reason", NULL};
    const char *address = NULL, *reason = NULL;
    if (check_fields(req, fields, error) != 0 ||
        cad_control_arg_string(req, "address", true, &address, error) != 0 ||
        cad_control_arg_string(req, "reason", false, &reason, error) != 0)
        return NULL;
    if (reason && (strlen(reason) > 500 || strpbrk(reason, "\r\n\t")))
        return cad_control_fail(error, CAD_CONTROL_BAD_REQUEST,
                                "field reason: one line of at most 500 bytes");
    char err[CAD_ERRBUF], stored[256];
    int rc = cad_store_suppression_address(address, stored, err);
    if (rc == 0)
        rc = cad_store_suppress_address(cad_daemon_store(c->d), stored,
                                        reason ? reason : "operator", now_seconds(), err);
    if (rc != 0)
        return store_fail(error, rc, err);
    stoppers_changed(c, 0);
    cad_log_info("control: address suppressed uid=%u pid=%d", (unsigned)peer->uid, (int)peer->pid);
    return json_pack("{s:s, s:b}", "address", stored, "suppressed", 1);
}

static json_t *cmd_suppression_remove(json_t *req, const cad_control_peer_t *peer, void *arg,
                                      cad_control_error_t *error)
{
    cad_commands_t *c = arg;
    static const char *const fields[] = {"address", NULL};
    const char *address = NULL;
    if (check_fields(req, fields, error) != 0 ||
        cad_control_arg_string(req, "address", true, &address, error) != 0)
        return NULL;
    char err[CAD_ERRBUF], stored[256];
    int rc = cad_store_suppression_address(address, stored, err);
    if (rc == 0)
        rc = cad_store_unsuppress_address(cad_daemon_store(c->d), stored, now_seconds(), rescan_one,
                                          c, err);
    if (rc != 0)
        return store_fail(error, rc, err);
    cad_log_info("control: address taken off the suppression list uid=%u pid=%d",
                 (unsigned)peer->uid, (int)peer->pid);
    return json_pack("{s:s, s:b}", "address", stored, "suppressed", 0);
}

static json_t *cmd_suppression_list(json_t *req, const cad_control_peer_t *peer, void *arg,
                                    cad_control_error_t *error)
{
    (void)peer;
    cad_commands_t *c = arg;
    static const char *const fields[] = {"limit", NULL};
    int limit;
    if (check_fields(req, fields, error) != 0 || arg_limit(req, 1000, &limit, error) != 0)
        return NULL;
    json_t *list = json_array();
    if (!list)
        return oom(error);
    char err[CAD_ERRBUF];
    int rc = cad_store_suppression_foreach(cad_daemon_store(c->d), limit, collect_suppression, list,
                                           err);
    if (rc < 0) {
        json_decref(list);
        return store_fail(error, rc, err);
    }
    return json_pack("{s:o}", "suppressions", list);
}

/* ---- events --------------------------------------------------------------- */

static json_t *cmd_event_add(json_t *req, const cad_control_peer_t *peer, void *arg,
                             cad_control_error_t *error)
{
    (void)peer;
    cad_commands_t *c = arg;
    static const char *const fields[] = {"event", NULL};
    json_t *obj;
    if (check_fields(req, fields, error) != 0 || object_arg(req, "event", &obj, error) != 0)
        return NULL;
    const char *id = object_id(obj, "id", "event", error);
    const char *customer = id ? object_id(obj, "customer", "event", error) : NULL;
    if (!customer)
        return NULL;
    int64_t key;
    char err[CAD_ERRBUF];
    int rc = cad_store_customer_key(cad_daemon_store(c->d), customer, &key, err);
    if (rc != 0)
        return store_fail(error, rc, err);
    if (group_join(c, error) < 0)
        return NULL;
    rc = import_object(c, obj, CAD_IMPORT_EVENTS, "event", error);
    if (rc < 0) {
        bool was_lost = c->group_lost;
        group_check(c);
        if (c->group_lost && !was_lost) /* this failure took the group with it: say why */
            snprintf(c->group_error, sizeof(c->group_error),
                     "the store rolled back the writes of this loop turn: %.400s", error->message);
        return NULL;
    }
    if (rc == 0)
        group_changed(c, key);
    return json_pack("{s:s, s:s, s:b}", "event", id, "customer", customer, "duplicate", rc == 1);
}

/* ---- import in chunks ----------------------------------------------------- */

typedef struct chunk_ctx {
    const char *source;
    size_t source_len;
    int64_t offset; /* file line = loader line + offset */
    json_t *errors;
    int64_t rejected;
} chunk_ctx_t;

static void chunk_reject(const char *message, void *arg)
{
    chunk_ctx_t *x = arg;
    x->rejected++;
    if (json_array_size(x->errors) >= CAD_COMMANDS_IMPORT_MAX_ERRORS)
        return;
    long long line = 0;
    const char *rest = message;
    if (strncmp(message, x->source, x->source_len) == 0 && message[x->source_len] == ':') {
        char *end;
        line = strtoll(message + x->source_len + 1, &end, 10);
        if (end[0] == ':' && end[1] == ' ')
            rest = end + 2;
        else
            line = 0;
    }
    if (line > 0)
        line += x->offset;
    char full[CAD_ERRBUF + 64];
    if (line > 0)
        snprintf(full, sizeof(full), "%s:%lld: %s", x->source, line, rest);
    else
        snprintf(full, sizeof(full), "%s", message);
    json_t *item = json_pack("{s:I, s:s}", "line", (json_int_t)line, "message", full);
    if (item)
        json_array_append_new(x->errors, item);
}

static json_t *cmd_import(json_t *req, const cad_control_peer_t *peer, void *arg,
                          cad_control_error_t *error)
{
    (void)peer;
    cad_commands_t *c = arg;
    static const char *const fields[] = {"kind",   "format", "source", "first_line",
                                         "header", "lines",  NULL};
    const char *kind_name = NULL, *format_name = NULL, *source = "input", *header = NULL;
    int64_t first_line = 1;
    if (check_fields(req, fields, error) != 0 ||
        cad_control_arg_string(req, "kind", true, &kind_name, error) != 0 ||
        cad_control_arg_string(req, "format", true, &format_name, error) != 0 ||
        cad_control_arg_string(req, "source", false, &source, error) != 0 ||
        cad_control_arg_int(req, "first_line", false, &first_line, error) != 0 ||
        cad_control_arg_string(req, "header", false, &header, error) != 0)
        return NULL;
    int kind = cad_import_kind_parse(kind_name);
    if (kind < 0)
        return cad_control_fail(error, CAD_CONTROL_BAD_REQUEST,
                                "field kind: '%s' is not an import kind (customers, contacts, "
                                "events)",
                                kind_name);
    int format = cad_import_format_parse(format_name);
    if (format < 0)
        return cad_control_fail(error, CAD_CONTROL_BAD_REQUEST,
                                "field format: '%s' is not an import format (csv, jsonl)",
                                format_name);
    if (first_line < 1 || first_line > INT64_MAX / 2)
        return cad_control_fail(error, CAD_CONTROL_BAD_REQUEST,
                                "field first_line: must be a line number from 1");
    if (!*source || strlen(source) > 256 || strchr(source, '\n'))
        return cad_control_fail(error, CAD_CONTROL_BAD_REQUEST,
                                "field source: must be a file name of 1 to 256 bytes");
    if (format == CAD_IMPORT_CSV && !header)
        return cad_control_fail(error, CAD_CONTROL_BAD_REQUEST,
                                "field header: required for CSV (the file's header row)");
    if (format != CAD_IMPORT_CSV && header)
        return cad_control_fail(error, CAD_CONTROL_BAD_REQUEST,
                                "field header: only CSV imports have a header row");
    json_t *lines = json_object_get(req, "lines");
    if (!json_is_array(lines))
        return cad_control_fail(error, CAD_CONTROL_BAD_REQUEST, "field lines: %s",
                                lines ? "must be an array of strings" : "required");
    size_t n = json_array_size(lines);
    if (n > CAD_COMMANDS_IMPORT_MAX_LINES)
        return cad_control_fail(error, CAD_CONTROL_BAD_REQUEST,
                                "field lines: %zu lines in one request; at most %d", n,
                                CAD_COMMANDS_IMPORT_MAX_LINES);
    size_t total = header ? strlen(header) + 1 : 0;
    if (header && strchr(header, '\n'))
        return cad_control_fail(error, CAD_CONTROL_BAD_REQUEST, "field header: must be one line");
    for (size_t i = 0; i < n; i++) {
        json_t *l = json_array_get(lines, i);
        if (!json_is_string(l))
            return cad_control_fail(error, CAD_CONTROL_BAD_REQUEST,
                                    "field lines: item %zu (line %lld) is not a string", i + 1,
                                    (long long)(first_line + (int64_t)i));
        const char *s = json_string_value(l);
        size_t len = json_string_length(l);
        if (memchr(s, '\n', len) || strlen(s) != len)
            return cad_control_fail(error, CAD_CONTROL_BAD_REQUEST,
                                    "field lines: item %zu (line %lld) holds a newline or NUL; "
                                    "send one physical line per item",
                                    i + 1, (long long)(first_line + (int64_t)i));
        total += len + 1;
    }
    json_t *errors = json_array();
    if (!errors)
        return oom(error);
    cad_import_report_t rep = {0};
    cad_time_t now = now_seconds();
    chunk_ctx_t x = {
        .source = source,
        .source_len = strlen(source),
        .offset = first_line - (header ? 2 : 1),
        .errors = errors,
    };
    if (n > 0) {
        char *buf = malloc(total + 1);
        if (!buf) {
            json_decref(errors);
            return oom(error);
        }
        size_t pos = 0;
        if (header) {
            size_t hl = strlen(header);
            memcpy(buf, header, hl);
            pos = hl;
            buf[pos++] = '\n';
        }
        for (size_t i = 0; i < n; i++) {
            json_t *l = json_array_get(lines, i);
            size_t len = json_string_length(l);
            memcpy(buf + pos, json_string_value(l), len);
            pos += len;
            buf[pos++] = '\n';
        }
        buf[pos] = '\0';
        FILE *in = fmemopen(buf, pos, "r");
        if (!in) {
            free(buf);
            json_decref(errors);
            return oom(error);
        }
        cad_import_options_t io = {
            .kind = (enum cad_import_kind)kind,
            .format = (enum cad_import_format)format,
            .source = source,
            .now = now,
            .on_reject = chunk_reject,
            .arg = &x,
        };
        char err[CAD_ERRBUF] = "";
        int rc = cad_import(cad_daemon_store(c->d), &cad_daemon_config(c->d)->playbook, in, &io,
                            &rep, err);
        fclose(in);
        free(buf);
        if (rep.accepted > 0)
            rescan_soon(c, now);
        if (rep.accepted > 0 && kind != CAD_IMPORT_EVENTS)
            c->rescan_recheck = true; /* consent, pauses, addresses may have changed */
        if (rc != 0) {
            json_decref(errors);
            if (rc == -CAD_EINVAL)
                return cad_control_fail(error, CAD_CONTROL_BAD_REQUEST, "%s", err);
            cad_log_err("import: stopped: %s source=%s accepted=%lld", err, source,
                        (long long)rep.accepted);
            return cad_control_fail(error, CAD_CONTROL_INTERNAL,
                                    "%s (%lld rows of this request were kept)", err,
                                    (long long)rep.accepted);
        }
    }
    uint32_t max_line = cad_daemon_config(c->d)->max_line;
    return json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:o, s:b, s:I, s:i}", "kind",
                     cad_import_kind_name((enum cad_import_kind)kind), "first_line",
                     (json_int_t)first_line, "records", (json_int_t)rep.records, "accepted",
                     (json_int_t)rep.accepted, "rejected", (json_int_t)rep.rejected, "duplicates",
                     (json_int_t)rep.duplicates, "errors", errors, "errors_truncated",
                     x.rejected > (int64_t)json_array_size(errors), "max_line",
                     (json_int_t)(max_line ? max_line : CAD_CONTROL_DEFAULT_MAX_LINE), "max_lines",
                     CAD_COMMANDS_IMPORT_MAX_LINES);
}

/* ---- calendar and why ------------------------------------------------------ */

typedef struct calendar_ctx {
    json_t *entries;
    cad_time_t now;
} calendar_ctx_t;

static void collect_calendar(const cad_calendar_row_t *row, void *arg)
{
    calendar_ctx_t *x = arg;
    char due_local[96];
    cad_time_t due = row->rule[0] && row->until > 0 ? row->until : row->next_eval;
    format_local(row->timezone, due, due_local, sizeof(due_local));
    const char *why = row->sentence;
    if (!*why)
        why = row->paused                ? "paused by an operator; re-checked then"
              : row->next_eval <= x->now ? "due now: changed or not evaluated yet"
                                         : "routine re-check (no rule is waiting)";
    json_t *item =
        json_pack("{s:s, s:s, s:I, s:s, s:I, s:s, s:s, s:s, s:b, s:s}", "customer",
                  row->customer_id, "name", row->name, "due", (json_int_t)due, "due_local",
                  due_local, "next_eval", (json_int_t)row->next_eval, "rule", row->rule, "verdict",
                  row->verdict, "reason", row->reason, "paused", row->paused, "why", why);
    if (item)
        json_array_append_new(x->entries, item);
}

static json_t *cmd_calendar(json_t *req, const cad_control_peer_t *peer, void *arg,
                            cad_control_error_t *error)
{
    (void)peer;
    cad_commands_t *c = arg;
    static const char *const fields[] = {"limit", "customer", "rule", NULL};
    const char *customer = NULL, *rule = NULL;
    int limit;
    if (check_fields(req, fields, error) != 0 || arg_limit(req, 20, &limit, error) != 0 ||
        cad_control_arg_string(req, "customer", false, &customer, error) != 0 ||
        cad_control_arg_string(req, "rule", false, &rule, error) != 0)
        return NULL;
    const cad_playbook_t *pb = &cad_daemon_config(c->d)->playbook;
    if (rule) {
        bool known = false;
        for (int i = 0; i < pb->n_rules; i++)
            known = known || strcmp(pb->rules[i].name, rule) == 0;
        if (!known)
            return cad_control_fail(error, CAD_CONTROL_NOT_FOUND,
                                    "rule '%s' is not in the playbook", rule);
    }
    char err[CAD_ERRBUF];
    int64_t key;
    int rc;
    if (customer && (rc = cad_store_customer_key(cad_daemon_store(c->d), customer, &key, err)) != 0)
        return store_fail(error, rc, err);
    calendar_ctx_t x = {json_array(), now_seconds()};
    if (!x.entries)
        return oom(error);
    rc = cad_store_calendar_foreach(cad_daemon_store(c->d), customer, rule, limit, collect_calendar,
                                    &x, err);
    if (rc < 0) {
        json_decref(x.entries);
        return store_fail(error, rc, err);
    }
    return json_pack("{s:I, s:o}", "now", (json_int_t)x.now, "entries", x.entries);
}

/* What keeps a touch that is due already from going out: its customer is
 * paused, its channel's plugin is not loaded, the channel is disabled or
 * its circuit is open. NULL when nothing holds it (it goes at the next
 * claim). `ds` is the dispatcher's view, NULL when it does not run. */
static const char *touch_hold(const cad_outbox_touch_t *t, const cad_dispatch_stats_t *ds,
                              bool paused, cad_time_t now)
{
    if ((t->state != CAD_OUTBOX_QUEUED && t->state != CAD_OUTBOX_RETRY_WAIT) || t->due_at > now)
        return NULL;
    if (paused)
        return "held: the customer is paused";
    if (!ds)
        return NULL;
    for (int i = 0; i < ds->n_channels; i++) {
        const cad_dispatch_channel_stats_t *ch = &ds->channels[i];
        if (strcmp(ch->channel, t->channel) != 0)
            continue;
        if (!ch->ready)
            return "held: its channel's plugin is not loaded (cadencectl plugins)";
        if (ch->disabled)
            return "held: its channel is disabled (endpoint gone or credentials refused); fix "
                   "it and reload";
        if (ch->circuit != CAD_CIRCUIT_CLOSED)
            return "held: its channel's circuit is open, the provider is failing; probes "
                   "continue";
        return NULL;
    }
    return "held: no channel of that name in the configuration";
}

/* The dispatcher's view for touch_hold, or NULL; free() it. */
static cad_dispatch_stats_t *dispatch_view(cad_commands_t *c)
{
    cad_dispatch_t *disp = cad_daemon_dispatch(c->d);
    cad_dispatch_stats_t *ds = disp ? calloc(1, sizeof *ds) : NULL;
    if (ds)
        cad_dispatch_get_stats(disp, ds);
    return ds;
}

typedef struct why_ctx {
    const cad_dispatch_stats_t *ds;
    bool paused;
    cad_time_t now;
    const char *zone;
    json_t *decisions;
    json_t *touches;
    cad_time_t latest_at;
    int latest_send, latest_wait, latest_defer, latest_suppress;
} why_ctx_t;

static const char *verdict_phrase(const char *verdict)
{
    if (strcmp(verdict, "send") == 0)
        return "sent";
    if (strcmp(verdict, "defer") == 0)
        return "deferred";
    if (strcmp(verdict, "suppress") == 0)
        return "suppressed";
    if (strcmp(verdict, "wait") == 0)
        return "waiting";
    return verdict;
}

static void collect_trace(const cad_trace_row_t *row, void *arg)
{
    why_ctx_t *x = arg;
    if (x->latest_at == 0)
        x->latest_at = row->at;
    if (row->at == x->latest_at) {
        x->latest_send += strcmp(row->verdict, "send") == 0;
        x->latest_wait += strcmp(row->verdict, "wait") == 0;
        x->latest_defer += strcmp(row->verdict, "defer") == 0;
        x->latest_suppress += strcmp(row->verdict, "suppress") == 0;
    }
    char at_local[96], until_local[96], text[CAD_ERRBUF * 2];
    format_local(x->zone, row->at, at_local, sizeof(at_local));
    format_local(x->zone, row->until, until_local, sizeof(until_local));
    size_t n =
        (size_t)snprintf(text, sizeof(text), "%s: %s", row->rule, verdict_phrase(row->verdict));
    if (strcmp(row->verdict, "send") == 0 && n < sizeof(text)) {
        if (*row->channel)
            n += (size_t)snprintf(text + n, sizeof(text) - n, " by %s", row->channel);
        if (*row->contact && n < sizeof(text))
            n += (size_t)snprintf(text + n, sizeof(text) - n, " to %s", row->contact);
        if (*row->content && n < sizeof(text))
            n += (size_t)snprintf(text + n, sizeof(text) - n, " (content %s)", row->content);
    }
    if (n < sizeof(text))
        snprintf(text + n, sizeof(text) - n, " — %s", *row->sentence ? row->sentence : row->reason);
    json_t *item = json_pack(
        "{s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:s}", "at", (json_int_t)row->at,
        "at_local", at_local, "rule", row->rule, "verdict", row->verdict, "reason", row->reason,
        "sentence", row->sentence, "channel", row->channel, "contact", row->contact, "content",
        row->content, "until", time_or_null(row->until), "text", text);
    if (item && row->until > 0)
        json_object_set_new(item, "until_local", json_string(until_local));
    if (item)
        json_array_append_new(x->decisions, item);
}

static void collect_touch_of_customer(const cad_outbox_touch_t *t, void *arg)
{
    why_ctx_t *x = arg;
    char decided[96], updated[96];
    format_local(x->zone, t->decided_at, decided, sizeof(decided));
    format_local(x->zone, t->updated_at, updated, sizeof(updated));
    json_t *item = json_pack(
        "{s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:s, s:s}", "key", (json_int_t)t->key, "rule",
        t->rule, "channel", t->channel, "contact", t->contact_id, "state",
        cad_outbox_state_name(t->state), "decided_local", decided, "updated_local", updated,
        "attempts", t->attempt, "last_error", t->last_error, "idempotency_key", t->idempotency_key);
    /* A touch still to send: when it goes (next attempt, or first send). */
    if (item && (t->state == CAD_OUTBOX_QUEUED || t->state == CAD_OUTBOX_RETRY_WAIT)) {
        char due[96];
        format_local(x->zone, t->due_at, due, sizeof(due));
        json_object_set_new(item, "due_local", json_string(due));
        const char *held = touch_hold(t, x->ds, x->paused, x->now);
        if (held)
            json_object_set_new(item, "held", json_string(held));
    }
    if (item)
        json_array_append_new(x->touches, item);
}

static void keep_customer(const cad_customer_row_t *row, void *arg)
{
    json_t **out = arg;
    *out = customer_json(row);
}

/* In a listing of touches: those due already whose customer is paused are
 * held for that (R14), whatever else holds them. One look-up per customer. */
static void mark_paused(cad_commands_t *c, json_t *list, cad_time_t now)
{
    json_t *seen = json_object(); /* customer id -> paused */
    size_t i;
    json_t *t;
    json_array_foreach(list, i, t)
    {
        const char *state = json_string_value(json_object_get(t, "state"));
        const char *id = json_string_value(json_object_get(t, "customer"));
        if (!seen || !state || !id || json_integer_value(json_object_get(t, "due_at")) > now ||
            (strcmp(state, "queued") != 0 && strcmp(state, "retry_wait") != 0))
            continue;
        json_t *paused = json_object_get(seen, id);
        if (!paused) {
            json_t *cust = NULL;
            char err[CAD_ERRBUF];
            if (cad_store_customer_get(cad_daemon_store(c->d), id, keep_customer, &cust, err) == 0)
                paused = json_boolean(json_is_true(json_object_get(cust, "paused")));
            else
                paused = json_false();
            json_decref(cust);
            json_object_set_new(seen, id, paused);
        }
        if (json_is_true(paused))
            json_object_set_new(t, "held", json_string("held: the customer is paused"));
    }
    json_decref(seen);
}

static json_t *cmd_why(json_t *req, const cad_control_peer_t *peer, void *arg,
                       cad_control_error_t *error)
{
    (void)peer;
    cad_commands_t *c = arg;
    static const char *const fields[] = {"customer", "limit", NULL};
    const char *id = NULL;
    int limit;
    if (check_fields(req, fields, error) != 0 ||
        cad_control_arg_string(req, "customer", true, &id, error) != 0 ||
        arg_limit(req, 30, &limit, error) != 0)
        return NULL;
    cad_store_t *st = cad_daemon_store(c->d);
    char err[CAD_ERRBUF];
    json_t *cust = NULL;
    int rc = cad_store_customer_get(st, id, keep_customer, &cust, err);
    if (rc != 0)
        return store_fail(error, rc, err);
    if (!cust)
        return oom(error);
    cad_dispatch_stats_t *ds = dispatch_view(c);
    why_ctx_t x = {.ds = ds,
                   .paused = json_is_true(json_object_get(cust, "paused")),
                   .now = now_seconds(),
                   .zone = json_string_value(json_object_get(cust, "timezone")),
                   .decisions = json_array(),
                   .touches = json_array()};
    if (x.decisions && x.touches)
        rc = cad_store_trace_foreach(st, id, limit, collect_trace, &x, err);
    if (rc >= 0 && x.decisions && x.touches)
        rc = cad_store_outbox_foreach(st, -1, id, 10, collect_touch_of_customer, &x, err);
    free(ds);
    if (rc < 0 || !x.decisions || !x.touches) {
        json_decref(cust);
        json_decref(x.decisions);
        json_decref(x.touches);
        return rc < 0 ? store_fail(error, rc, err) : oom(error);
    }
    char summary[CAD_ERRBUF * 2], latest[96];
    const char *next_local = json_string_value(json_object_get(cust, "next_eval_local"));
    format_local(x.zone, x.latest_at, latest, sizeof(latest));
    if (json_is_true(json_object_get(cust, "paused")))
        snprintf(summary, sizeof(summary),
                 "%s is paused by an operator: nothing is sent until `resume`.", id);
    else if (x.latest_at == 0)
        snprintf(summary, sizeof(summary),
                 "%s has not been evaluated yet; the next evaluation is at %s.", id,
                 next_local ? next_local : "-");
    else if (x.latest_send > 0)
        snprintf(summary, sizeof(summary),
                 "At %s a touch was chosen for %s (see below); the next evaluation is at %s.",
                 latest, id, next_local ? next_local : "-");
    else
        snprintf(summary, sizeof(summary),
                 "At the last evaluation (%s) nothing was sent to %s: %d rule%s waiting for a "
                 "window, %d deferred, %d suppressed. The next evaluation is at %s.",
                 latest, id, x.latest_wait, x.latest_wait == 1 ? "" : "s", x.latest_defer,
                 x.latest_suppress, next_local ? next_local : "-");
    json_object_set_new(cust, "summary", json_string(summary));
    json_object_set_new(cust, "decisions", x.decisions);
    json_object_set_new(cust, "touches", x.touches);
    return cust;
}

/* ---- simulate: a child process per forecast -------------------------------- */

static void job_handle_closed(uv_handle_t *h)
{
    sim_job_t *j = h->data;
    j->open_handles--;
    j->owner->open_handles--;
    if (j->open_handles == 0 && !j->finished_at)
        j->finished_at = time(NULL);
    on_handle_closed(h);
}

static void job_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    static char scratch[65536];
    (void)suggested;
    buf->base = scratch;
    buf->len = sizeof(scratch);
}

static void job_close(sim_job_t *j, uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, job_handle_closed);
}

static void job_on_stdout(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    sim_job_t *j = s->data;
    if (n < 0) {
        job_close(j, (uv_handle_t *)s);
        return;
    }
    size_t len = (size_t)n;
    if (j->len + len > CAD_COMMANDS_SIMULATE_MAX_OUTPUT) {
        j->truncated = true;
        len = CAD_COMMANDS_SIMULATE_MAX_OUTPUT - j->len;
    }
    if (len == 0)
        return;
    if (j->len + len + 1 > j->cap) {
        size_t cap = j->cap ? j->cap : 65536;
        while (cap < j->len + len + 1)
            cap *= 2;
        char *nb = realloc(j->buf, cap);
        if (!nb) {
            j->truncated = true;
            return;
        }
        j->buf = nb;
        j->cap = cap;
    }
    memcpy(j->buf + j->len, buf->base, len);
    j->len += len;
    j->buf[j->len] = '\0';
}

static void job_on_stderr(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    sim_job_t *j = s->data;
    if (n < 0) {
        job_close(j, (uv_handle_t *)s);
        return;
    }
    size_t room = sizeof(j->errtext) - 1 - j->errlen;
    size_t len = (size_t)n < room ? (size_t)n : room;
    memcpy(j->errtext + j->errlen, buf->base, len);
    j->errlen += len;
    j->errtext[j->errlen] = '\0';
}

static void job_on_exit(uv_process_t *p, int64_t status, int term_signal)
{
    sim_job_t *j = p->data;
    j->exited = true;
    j->exit_status = status;
    j->term_signal = term_signal;
    cad_log_info("simulate: forecast finished job=%d exit_status=%lld signal=%d bytes=%zu", j->id,
                 (long long)status, term_signal, j->len);
    job_close(j, (uv_handle_t *)p);
}

static void job_free(sim_job_t *j)
{
    free(j->buf);
    free(j);
}

/* Forgets forecasts finished long ago (their output was read or abandoned). */
static void jobs_sweep(cad_commands_t *c)
{
    time_t now = time(NULL);
    for (sim_job_t **pp = &c->jobs; *pp;) {
        sim_job_t *j = *pp;
        if (j->open_handles == 0 && j->finished_at &&
            now - j->finished_at > SIMULATE_KEEP_SECONDS) {
            *pp = j->next;
            job_free(j);
        } else {
            pp = &j->next;
        }
    }
}

static const char *job_state(const sim_job_t *j)
{
    if (j->open_handles > 0)
        return "running";
    return j->exit_status == 0 && j->term_signal == 0 ? "done" : "failed";
}

static char **child_environment(void)
{
    extern char **environ;
    size_t n = 0;
    while (environ[n])
        n++;
    char **env = calloc(n + 1, sizeof(*env));
    if (!env)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "NOTIFY_SOCKET=", 14) != 0 &&
            strncmp(environ[i], "WATCHDOG_", 9) != 0 && strncmp(environ[i], "LISTEN_", 7) != 0)
            env[k++] = environ[i];
    return env;
}

static json_t *cmd_simulate(json_t *req, const cad_control_peer_t *peer, void *arg,
                            cad_control_error_t *error)
{
    cad_commands_t *c = arg;
    static const char *const fields[] = {"days", "customer", "json", NULL};
    int64_t days = 0;
    const char *customer = NULL;
    bool as_json = false;
    if (check_fields(req, fields, error) != 0 ||
        cad_control_arg_int(req, "days", true, &days, error) != 0 ||
        cad_control_arg_string(req, "customer", false, &customer, error) != 0 ||
        cad_control_arg_bool(req, "json", false, &as_json, error) != 0)
        return NULL;
    if (days < 1 || days > 3650)
        return cad_control_fail(error, CAD_CONTROL_BAD_REQUEST,
                                "field days: must be 1 to 3650, not %lld", (long long)days);
    if (c->stopping)
        return cad_control_fail(error, CAD_CONTROL_BUSY, "the daemon is stopping");
    char err[CAD_ERRBUF];
    int64_t key;
    int rc;
    if (customer && (rc = cad_store_customer_key(cad_daemon_store(c->d), customer, &key, err)) != 0)
        return store_fail(error, rc, err);
    jobs_sweep(c);
    int running = 0;
    for (sim_job_t *j = c->jobs; j; j = j->next)
        running += j->open_handles > 0;
    if (running >= CAD_COMMANDS_SIMULATE_MAX_JOBS)
        return cad_control_fail(error, CAD_CONTROL_BUSY,
                                "%d forecasts are running already; try again when one is done",
                                running);
    const cad_config_t *cfg = cad_daemon_config(c->d);
    char exe[4096];
    size_t exe_len = sizeof(exe);
    if (uv_exepath(exe, &exe_len) != 0)
        return cad_control_fail(error, CAD_CONTROL_INTERNAL, "cannot find the cadenced program");
    char days_text[16];
    snprintf(days_text, sizeof(days_text), "%lld", (long long)days);
    char *args[12];
    int n = 0;
    args[n++] = exe;
    args[n++] = "--config";
    args[n++] = cfg->path;
    args[n++] = "--state-dir";
    args[n++] = cfg->state_dir;
    args[n++] = "--simulate";
    args[n++] = days_text;
    if (customer) {
        args[n++] = "--customer";
        args[n++] = (char *)customer;
    }
    if (as_json)
        args[n++] = "--json";
    args[n] = NULL;

    sim_job_t *j = calloc(1, sizeof(*j));
    char **env = child_environment();
    if (!j || !env) {
        free(j);
        free(env);
        return oom(error);
    }
    j->owner = c;
    j->id = ++c->next_job;
    j->days = (int)days;
    snprintf(j->customer, sizeof(j->customer), "%s", customer ? customer : "");
    uv_loop_t *loop = cad_daemon_loop(c->d);
    uv_pipe_init(loop, &j->out, 0);
    uv_pipe_init(loop, &j->err, 0);
    j->out.data = j->err.data = j->proc.data = j;
    uv_stdio_container_t stdio[3] = {
        {.flags = UV_IGNORE},
        {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&j->out},
        {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&j->err},
    };
    uv_process_options_t po = {
        .exit_cb = job_on_exit,
        .file = exe,
        .args = args,
        .env = env,
        .stdio = stdio,
        .stdio_count = 3,
    };
    int uvrc = uv_spawn(loop, &j->proc, &po);
    free(env);
    j->next = c->jobs;
    c->jobs = j;
    if (uvrc != 0) {
        j->open_handles = 3;
        c->open_handles += 3;
        j->exited = true;
        j->exit_status = 127;
        snprintf(j->errtext, sizeof(j->errtext), "cannot start %.200s: %s", exe, uv_strerror(uvrc));
        job_close(j, (uv_handle_t *)&j->proc);
        job_close(j, (uv_handle_t *)&j->out);
        job_close(j, (uv_handle_t *)&j->err);
        return cad_control_fail(error, CAD_CONTROL_INTERNAL, "cannot start the forecast: %s",
                                uv_strerror(uvrc));
    }
    j->open_handles = 3;
    c->open_handles += 3;
    uv_read_start((uv_stream_t *)&j->out, job_alloc, job_on_stdout);
    uv_read_start((uv_stream_t *)&j->err, job_alloc, job_on_stderr);
    char v[CAD_LOG_VALUE_MAX];
    cad_log_info("simulate: forecast started job=%d days=%lld customer=%s pid=%d uid=%u", j->id,
                 (long long)days, customer ? cad_log_value(customer, v) : "*", j->proc.pid,
                 (unsigned)peer->uid);
    return json_pack("{s:i, s:s, s:i, s:s}", "job", j->id, "state", "running", "days", j->days,
                     "customer", j->customer);
}

static json_t *cmd_simulate_output(json_t *req, const cad_control_peer_t *peer, void *arg,
                                   cad_control_error_t *error)
{
    (void)peer;
    cad_commands_t *c = arg;
    static const char *const fields[] = {"job", "offset", NULL};
    int64_t id = 0, offset = 0;
    if (check_fields(req, fields, error) != 0 ||
        cad_control_arg_int(req, "job", true, &id, error) != 0 ||
        cad_control_arg_int(req, "offset", false, &offset, error) != 0)
        return NULL;
    sim_job_t *j = c->jobs;
    while (j && j->id != id)
        j = j->next;
    if (!j)
        return cad_control_fail(error, CAD_CONTROL_NOT_FOUND,
                                "no forecast job %lld (finished ones are kept %d minutes)",
                                (long long)id, SIMULATE_KEEP_SECONDS / 60);
    if (offset < 0 || (size_t)offset > j->len)
        return cad_control_fail(error, CAD_CONTROL_BAD_REQUEST,
                                "field offset: must be 0 to %zu (the output so far)", j->len);
    size_t start = (size_t)offset, take = j->len - start;
    if (take > SIMULATE_SLICE) {
        take = SIMULATE_SLICE;
        while (take > 0 && (j->buf[start + take] & 0xC0) == 0x80) /* whole UTF-8 characters */
            take--;
    }
    json_t *out = json_stringn(j->len ? j->buf + start : "", take);
    if (!out)
        return cad_control_fail(error, CAD_CONTROL_INTERNAL,
                                "forecast %d: output at offset %zu is not UTF-8 text", j->id,
                                start);
    const char *state = job_state(j);
    bool running = j->open_handles > 0;
    bool finished = !running && start + take == j->len;
    json_t *r = json_pack("{s:i, s:s, s:o, s:I, s:b, s:b}", "job", j->id, "state", state, "output",
                          out, "offset", (json_int_t)(start + take), "finished", finished,
                          "truncated", j->truncated);
    if (r && !running) {
        json_object_set_new(r, "exit_status", json_integer(j->exit_status));
        json_object_set_new(r, "errors", json_string(j->errtext));
    }
    return r;
}

/* ---- pause, resume -------------------------------------------------------- */

static json_t *pause_resume(cad_commands_t *c, json_t *req, bool paused,
                            const cad_control_peer_t *peer, cad_control_error_t *error)
{
    static const char *const fields[] = {"customer", NULL};
    const char *id = NULL;
    if (check_fields(req, fields, error) != 0 ||
        cad_control_arg_string(req, "customer", true, &id, error) != 0)
        return NULL;
    cad_store_t *st = cad_daemon_store(c->d);
    char err[CAD_ERRBUF];
    int64_t key;
    int rc = cad_store_customer_key(st, id, &key, err);
    if (rc == 0)
        rc = cad_store_customer_pause(st, id, paused, now_seconds(), err);
    if (rc != 0)
        return store_fail(error, rc, err);
    if (paused)
        stoppers_changed(c, key);
    else
        changed(c, key);
    cad_dispatch_t *disp = cad_daemon_dispatch(c->d);
    if (!paused && disp)
        cad_dispatch_kick(disp); /* the customer's waiting touches are due again */
    char v[CAD_LOG_VALUE_MAX];
    cad_log_info("control: customer %s customer=%s uid=%u pid=%d", paused ? "paused" : "resumed",
                 cad_log_value(id, v), (unsigned)peer->uid, (int)peer->pid);
    return json_pack("{s:s, s:b}", "customer", id, "paused", paused);
}

static json_t *cmd_pause(json_t *req, const cad_control_peer_t *peer, void *arg,
                         cad_control_error_t *error)
{
    return pause_resume(arg, req, true, peer, error);
}

static json_t *cmd_resume(json_t *req, const cad_control_peer_t *peer, void *arg,
                          cad_control_error_t *error)
{
    return pause_resume(arg, req, false, peer, error);
}

/* ---- outbox ---------------------------------------------------------------- */

typedef struct outbox_ctx {
    json_t *list;
    const cad_dispatch_stats_t *ds;
    cad_time_t now;
} outbox_ctx_t;

static void collect_outbox(const cad_outbox_touch_t *t, void *arg)
{
    outbox_ctx_t *x = arg;
    json_t *item = json_pack(
        "{s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:I, s:I, s:I, s:I, s:s, s:s}", "key",
        (json_int_t)t->key, "state", cad_outbox_state_name(t->state), "customer", t->customer_id,
        "contact", t->contact_id, "rule", t->rule, "channel", t->channel, "content", t->content_id,
        "idempotency_key", t->idempotency_key, "attempts", t->attempt, "decided_at",
        (json_int_t)t->decided_at, "due_at", (json_int_t)t->due_at, "expires_at",
        (json_int_t)t->expires_at, "updated_at", (json_int_t)t->updated_at, "last_error",
        t->last_error, "provider_id", t->provider_id);
    const char *held = item ? touch_hold(t, x->ds, false, x->now) : NULL;
    if (held)
        json_object_set_new(item, "held", json_string(held));
    if (item)
        json_array_append_new(x->list, item);
}

static int parse_state(const char *name)
{
    for (int s = CAD_OUTBOX_QUEUED; s <= CAD_OUTBOX_CANCELLED; s++)
        if (strcmp(cad_outbox_state_name((enum cad_outbox_state)s), name) == 0)
            return s;
    return -1;
}

static json_t *cmd_outbox_list(json_t *req, const cad_control_peer_t *peer, void *arg,
                               cad_control_error_t *error)
{
    (void)peer;
    cad_commands_t *c = arg;
    static const char *const fields[] = {"state", "customer", "limit", NULL};
    const char *state = NULL, *customer = NULL;
    int limit;
    if (check_fields(req, fields, error) != 0 ||
        cad_control_arg_string(req, "state", false, &state, error) != 0 ||
        cad_control_arg_string(req, "customer", false, &customer, error) != 0 ||
        arg_limit(req, 50, &limit, error) != 0)
        return NULL;
    int s = -1;
    if (state && (s = parse_state(state)) < 0)
        return cad_control_fail(error, CAD_CONTROL_BAD_REQUEST,
                                "field state: unknown state '%s' (queued, in_flight, retry_wait, "
                                "delivered, dead, cancelled)",
                                state);
    char err[CAD_ERRBUF];
    int64_t key;
    int rc;
    if (customer && (rc = cad_store_customer_key(cad_daemon_store(c->d), customer, &key, err)) != 0)
        return store_fail(error, rc, err);
    json_t *list = json_array();
    if (!list)
        return oom(error);
    outbox_ctx_t x = {.list = list, .ds = dispatch_view(c), .now = now_seconds()};
    rc = cad_store_outbox_foreach(cad_daemon_store(c->d), s, customer, limit, collect_outbox, &x,
                                  err);
    free((void *)x.ds);
    if (rc < 0) {
        json_decref(list);
        return store_fail(error, rc, err);
    }
    mark_paused(c, list, x.now);
    return json_pack("{s:o}", "touches", list);
}

/* The touch key: an integer, or a string of digits (as printed). */
static int arg_touch_key(json_t *req, int64_t *out, cad_control_error_t *error)
{
    json_t *v = json_object_get(req, "key");
    if (json_is_integer(v) && json_integer_value(v) > 0) {
        *out = json_integer_value(v);
        return 0;
    }
    if (json_is_string(v)) {
        char *end;
        errno = 0;
        long long k = strtoll(json_string_value(v), &end, 10);
        if (*json_string_value(v) && !*end && k > 0 && errno != ERANGE) {
            *out = k;
            return 0;
        }
    }
    cad_control_fail(error, CAD_CONTROL_BAD_REQUEST,
                     "field key: %s (the touch's key, as `outbox list` shows it)",
                     v ? "must be a positive integer" : "required");
    return -CAD_EINVAL;
}

typedef struct blocker {
    const cad_playbook_t *pb;
    const char *why; /* static, NULL when nothing stops the touch */
    char contact[CAD_ID_MAX + 1];
    char channel[CAD_NAME_MAX];
    bool held;        /* waiting its turn under a mail domain's limit */
    cad_time_t turn;  /* then: when it goes */
    char reason[256]; /* then: its held text */
} blocker_t;

/* What would withdraw touch t at its claim, into the blocker_t `arg`. */
static void find_blocker(const cad_outbox_touch_t *t, void *arg)
{
    blocker_t *b = arg;
    if (t->state == CAD_OUTBOX_RETRY_WAIT && t->last_error &&
        strncmp(t->last_error, CAD_DISPATCH_HELD_PREFIX, strlen(CAD_DISPATCH_HELD_PREFIX)) == 0) {
        b->held = true;
        b->turn = t->due_at;
        snprintf(b->reason, sizeof b->reason, "%s", t->last_error);
        return;
    }
    int c = cad_playbook_channel(b->pb, t->channel);
    if (c < 0 || (t->state != CAD_OUTBOX_DEAD && t->state != CAD_OUTBOX_RETRY_WAIT &&
                  t->state != CAD_OUTBOX_CANCELLED))
        return; /* the store refuses it, naming the state */
    b->why = cad_dispatch_withdraw_reason(b->pb->channels[c].address, t);
    snprintf(b->contact, sizeof b->contact, "%s", t->contact_id);
    snprintf(b->channel, sizeof b->channel, "%s", t->channel);
}

static json_t *outbox_change(cad_commands_t *c, json_t *req, bool retry,
                             const cad_control_peer_t *peer, cad_control_error_t *error)
{
    static const char *const fields[] = {"key", NULL};
    int64_t key;
    if (check_fields(req, fields, error) != 0 || arg_touch_key(req, &key, error) != 0)
        return NULL;
    char err[CAD_ERRBUF];
    cad_store_t *st = cad_daemon_store(c->d);
    /* A touch its contact may not receive would only be withdrawn again:
     * say what stops it instead of queueing it. */
    blocker_t b = {.pb = &cad_daemon_config(c->d)->playbook};
    if (retry && cad_store_outbox_get(st, key, find_blocker, &b, err) == 0 && b.held) {
        char when[32] = "";
        struct tm tm;
        time_t tt = (time_t)b.turn;
        if (gmtime_r(&tt, &tm))
            strftime(when, sizeof when, "at %Y-%m-%d %H:%M:%SZ", &tm);
        return cad_control_fail(error, CAD_CONTROL_BAD_REQUEST,
                                "touch %lld waits its turn, %s (%s); sending it now would break "
                                "the limit (outbox cancel stops it)",
                                (long long)key, when, b.reason);
    }
    if (b.why)
        return cad_control_fail(
            error, CAD_CONTROL_BAD_REQUEST,
            "touch %lld would not be sent: %s (contact %s, channel %s); clear "
            "that first (contact consent, suppress remove, contact usable, contact update) "
            "or cancel the touch",
            (long long)key, b.why, b.contact, b.channel);
    int rc = retry ? cad_store_outbox_requeue(st, key, now_seconds(), err)
                   : cad_store_outbox_cancel(st, key, now_seconds(), err);
    if (rc != 0)
        return store_fail(error, rc, err);
    cad_dispatch_t *disp = cad_daemon_dispatch(c->d);
    if (retry && disp)
        cad_dispatch_kick(disp);
    cad_log_info("control: touch %s key=%lld uid=%u pid=%d", retry ? "queued again" : "cancelled",
                 (long long)key, (unsigned)peer->uid, (int)peer->pid);
    return json_pack("{s:I, s:s}", "key", (json_int_t)key, "state", retry ? "queued" : "cancelled");
}

/* Every dead touch of a channel, a customer or both, dead since a time,
 * sent again: what an operator does after an outage outlasted the retries. */
static json_t *outbox_retry_dead(cad_commands_t *c, json_t *req, const cad_control_peer_t *peer,
                                 cad_control_error_t *error)
{
    static const char *const fields[] = {"state", "channel", "customer", "since", NULL};
    const char *state = NULL, *channel = NULL, *customer = NULL;
    cad_time_t now = now_seconds(), since = 0;
    if (check_fields(req, fields, error) != 0 ||
        cad_control_arg_string(req, "state", true, &state, error) != 0 ||
        cad_control_arg_string(req, "channel", false, &channel, error) != 0 ||
        cad_control_arg_string(req, "customer", false, &customer, error) != 0 ||
        arg_time(req, "since", now, &since, error) != 0)
        return NULL;
    if (strcmp(state, "dead") != 0)
        return cad_control_fail(error, CAD_CONTROL_BAD_REQUEST,
                                "field state: only dead touches are sent again in bulk, not '%s' "
                                "(one touch: give its key)",
                                state);
    if (channel && cad_playbook_channel(&cad_daemon_config(c->d)->playbook, channel) < 0)
        return cad_control_fail(error, CAD_CONTROL_NOT_FOUND,
                                "field channel: no channel '%s' in the configuration", channel);
    char err[CAD_ERRBUF];
    int64_t requeued, left;
    int rc = cad_store_outbox_requeue_dead(cad_daemon_store(c->d), channel, customer, since, now,
                                           &requeued, &left, err);
    if (rc != 0)
        return store_fail(error, rc, err);
    cad_dispatch_t *disp = cad_daemon_dispatch(c->d);
    if (requeued > 0 && disp)
        cad_dispatch_kick(disp);
    char v[CAD_LOG_VALUE_MAX];
    cad_log_info("control: dead touches queued again count=%lld expired_left=%lld channel=%s "
                 "customer=%s since=%lld uid=%u pid=%d",
                 (long long)requeued, (long long)left, channel ? channel : "*",
                 customer ? cad_log_value(customer, v) : "*", (long long)since, (unsigned)peer->uid,
                 (int)peer->pid);
    return json_pack("{s:I, s:I}", "requeued", (json_int_t)requeued, "expired", (json_int_t)left);
}

static json_t *cmd_outbox_retry(json_t *req, const cad_control_peer_t *peer, void *arg,
                                cad_control_error_t *error)
{
    if (!json_object_get(req, "key") && json_object_get(req, "state"))
        return outbox_retry_dead(arg, req, peer, error);
    return outbox_change(arg, req, true, peer, error);
}

static json_t *cmd_outbox_cancel(json_t *req, const cad_control_peer_t *peer, void *arg,
                                 cad_control_error_t *error)
{
    return outbox_change(arg, req, false, peer, error);
}

static void collect_transition(const cad_outbox_transition_t *t, void *arg)
{
    json_t *item = json_pack("{s:I, s:s, s:i, s:s}", "at", (json_int_t)t->at, "state", t->state,
                             "attempt", t->attempt, "detail", t->detail);
    if (item)
        json_array_append_new(arg, item);
}

/* One touch as outbox.list shows it, with every transition it went through
 * (time, state, attempt, provider id or error): what happened to it. */
static json_t *cmd_outbox_show(json_t *req, const cad_control_peer_t *peer, void *arg,
                               cad_control_error_t *error)
{
    (void)peer;
    cad_commands_t *c = arg;
    static const char *const fields[] = {"key", NULL};
    int64_t key;
    if (check_fields(req, fields, error) != 0 || arg_touch_key(req, &key, error) != 0)
        return NULL;
    char err[CAD_ERRBUF];
    cad_store_t *st = cad_daemon_store(c->d);
    json_t *list = json_array(), *history = json_array();
    if (!list || !history) {
        json_decref(list);
        json_decref(history);
        return oom(error);
    }
    outbox_ctx_t x = {.list = list, .ds = dispatch_view(c), .now = now_seconds()};
    int rc = cad_store_outbox_get(st, key, collect_outbox, &x, err);
    free((void *)x.ds);
    if (rc == 0)
        mark_paused(c, list, x.now);
    if (rc == 0 && (rc = cad_store_outbox_history(st, key, collect_transition, history, err)) > 0)
        rc = 0;
    json_t *touch = json_array_get(list, 0);
    if (rc == 0 && !touch)
        rc = cad_fail(err, CAD_ENOMEM, "out of memory reading touch %lld", (long long)key);
    if (rc < 0) {
        json_decref(list);
        json_decref(history);
        return store_fail(error, rc, err);
    }
    json_t *r = json_pack("{s:O, s:o}", "touch", touch, "history", history);
    json_decref(list);
    return r ? r : oom(error);
}

/* ---- alerts ---------------------------------------------------------------- */

static void collect_alert(const cad_alert_row_t *row, void *arg)
{
    json_t *item = json_pack("{s:I, s:s, s:s, s:s, s:s, s:I, s:I, s:o, s:b}", "key",
                             (json_int_t)row->key, "kind", row->kind, "customer", row->customer_id,
                             "rule", row->rule, "detail", row->detail, "first_at",
                             (json_int_t)row->first_at, "last_at", (json_int_t)row->last_at,
                             "closed_at", time_or_null(row->closed_at), "open", row->open);
    if (item)
        json_array_append_new(arg, item);
}

static json_t *cmd_alerts(json_t *req, const cad_control_peer_t *peer, void *arg,
                          cad_control_error_t *error)
{
    (void)peer;
    cad_commands_t *c = arg;
    static const char *const fields[] = {"all", "limit", NULL};
    bool all = false;
    int limit;
    if (check_fields(req, fields, error) != 0 ||
        cad_control_arg_bool(req, "all", false, &all, error) != 0 ||
        arg_limit(req, 100, &limit, error) != 0)
        return NULL;
    json_t *list = json_array();
    if (!list)
        return oom(error);
    char err[CAD_ERRBUF];
    cad_store_t *st = cad_daemon_store(c->d);
    int rc = cad_store_alerts_foreach(st, !all, limit, collect_alert, list, err);
    cad_store_counts_t counts;
    if (rc >= 0)
        rc = cad_store_counts(st, &counts, err);
    /* The latest dead touches themselves, so the count comes with names. */
    json_t *dead = json_array();
    if (rc >= 0 && dead) {
        outbox_ctx_t x = {.list = dead};
        rc = cad_store_outbox_foreach(st, CAD_OUTBOX_DEAD, NULL, 20, collect_outbox, &x, err);
    }
    if (rc < 0) {
        json_decref(list);
        json_decref(dead);
        return store_fail(error, rc, err);
    }
    /* Open circuits: a channel the dispatcher stopped sending to. */
    json_t *circuits = json_array();
    cad_dispatch_t *disp = cad_daemon_dispatch(c->d);
    cad_dispatch_stats_t ds = {0};
    if (disp)
        cad_dispatch_get_stats(disp, &ds);
    cad_plugin_host_t *host = cad_daemon_plugin_host(c->d);
    cad_plugin_info_t info[CAD_MAX_CHANNELS];
    int n_info = host ? cad_plugin_host_list(host, info, CAD_MAX_CHANNELS) : 0;
    for (int i = 0; circuits && i < ds.n_channels; i++) {
        const cad_dispatch_channel_stats_t *ch = &ds.channels[i];
        if (ch->circuit == CAD_CIRCUIT_CLOSED && ch->ready && !ch->disabled)
            continue;
        /* A channel that did not load: why it did not, not its last send. */
        const char *why = ch->last_error;
        for (int k = 0; !ch->ready && k < n_info; k++)
            if (strcmp(info[k].channel, ch->channel) == 0 && info[k].error && *info[k].error)
                why = info[k].error;
        const char *kind = !ch->ready     ? "plugin_not_loaded"
                           : ch->disabled ? "channel_disabled"
                                          : "circuit_open";
        json_t *item = json_pack(
            "{s:s, s:s, s:s, s:s, s:o, s:I, s:s}", "kind", kind, "channel", ch->channel, "plugin",
            ch->plugin, "circuit", cad_circuit_state_name(ch->circuit), "since",
            time_or_null(ch->disabled ? ch->disabled_since : ch->circuit_since),
            "consecutive_failures", (json_int_t)ch->consecutive_failures, "last_error", why);
        if (item)
            json_array_append_new(circuits, item);
    }
    /* Dead touches are alerts too: a touch decided and never delivered. */
    return json_pack(
        "{s:o, s:o, s:o, s:{s:I, s:I, s:I, s:I, s:I, s:I}}", "alerts", list, "dead_touches",
        dead ? dead : json_array(), "channels", circuits ? circuits : json_array(), "open",
        "circuits", (json_int_t)json_array_size(circuits), "content_gap",
        (json_int_t)counts.alerts_content_gap, "loop_overdue",
        (json_int_t)counts.alerts_loop_overdue, "silent", (json_int_t)counts.alerts_silent,
        "dead_touches", (json_int_t)counts.outbox[CAD_OUTBOX_DEAD], "total",
        (json_int_t)counts.alerts_open);
}

/* ---- report and holdout ------------------------------------------------------ */

static void report_silent(const cad_alert_row_t *row, void *arg)
{
    if (strcmp(row->kind, "silent") == 0)
        cad_report_add_silent(row->customer_id, arg);
}

/* Builds the report over the request's period; NULL after filling error. */
static cad_report_t *build_report(cad_commands_t *c, json_t *req, cad_control_error_t *error)
{
    static const char *const fields[] = {"since", "until", NULL};
    cad_time_t now = now_seconds(), to = now + 1, from = now - REPORT_DEFAULT_PERIOD;
    if (check_fields(req, fields, error) != 0 || arg_time(req, "since", now, &from, error) != 0 ||
        arg_time(req, "until", now, &to, error) != 0)
        return NULL;
    if (to <= from) {
        cad_control_fail(error, CAD_CONTROL_BAD_REQUEST,
                         "field until: the period must end after it starts");
        return NULL;
    }
    const cad_playbook_t *pb = &cad_daemon_config(c->d)->playbook;
    cad_report_t *r = cad_report_new(pb, from, to);
    if (!r) {
        oom(error);
        return NULL;
    }
    cad_store_t *st = cad_daemon_store(c->d);
    char err[CAD_ERRBUF];
    int rc = cad_store_report_foreach(st, from, to, cad_report_add_row, r, err);
    if (rc >= 0)
        rc = cad_store_alerts_foreach(st, true, 0, report_silent, r, err);
    if (rc >= 0)
        rc = cad_store_holdout_foreach(st, from, to, cad_report_add_holdout, r, err);
    if (rc < 0) {
        cad_report_free(r);
        store_fail(error, rc, err);
        return NULL;
    }
    return r;
}

static json_t *cmd_report(json_t *req, const cad_control_peer_t *peer, void *arg,
                          cad_control_error_t *error)
{
    (void)peer;
    cad_commands_t *c = arg;
    cad_report_t *r = build_report(c, req, error);
    if (!r)
        return NULL;
    json_t *out = cad_report_json(r);
    cad_report_free(r);
    if (!out)
        return oom(error);
    cad_store_counts_t counts;
    char err[CAD_ERRBUF];
    if (cad_store_counts(cad_daemon_store(c->d), &counts, err) == 0)
        json_object_set_new(out, "open_loops_overdue",
                            json_integer((json_int_t)counts.alerts_loop_overdue));
    return out;
}

static json_t *cmd_holdout(json_t *req, const cad_control_peer_t *peer, void *arg,
                           cad_control_error_t *error)
{
    (void)peer;
    cad_commands_t *c = arg;
    cad_report_t *r = build_report(c, req, error);
    if (!r)
        return NULL;
    json_t *out = cad_report_holdout_json(r, &cad_daemon_config(c->d)->playbook);
    cad_report_free(r);
    return out ? out : oom(error);
}

/* ---- plugins ------------------------------------------------------------------ */

static json_t *cmd_plugins(json_t *req, const cad_control_peer_t *peer, void *arg,
                           cad_control_error_t *error)
{
    (void)peer;
    cad_commands_t *c = arg;
    static const char *const fields[] = {NULL};
    if (check_fields(req, fields, error) != 0)
        return NULL;
    const cad_config_t *cfg = cad_daemon_config(c->d);
    cad_plugin_host_t *host = cad_daemon_plugin_host(c->d);
    cad_dispatch_t *disp = cad_daemon_dispatch(c->d);
    cad_plugin_info_t info[CAD_MAX_CHANNELS];
    int n = host ? cad_plugin_host_list(host, info, CAD_MAX_CHANNELS) : 0;
    cad_dispatch_stats_t ds = {0};
    if (disp)
        cad_dispatch_get_stats(disp, &ds);
    json_t *list = json_array();
    if (!list)
        return oom(error);
    for (int i = 0; i < cfg->playbook.n_channels; i++) {
        const cad_channel_t *ch = &cfg->playbook.channels[i];
        const cad_channel_config_t *cc = &cfg->channel_config[i];
        json_t *item = json_pack("{s:s, s:s, s:i, s:I, s:i, s:I, s:f, s:i}", "channel", ch->name,
                                 "plugin", ch->plugin, "concurrency", (int)cc->concurrency,
                                 "timeout", (json_int_t)cc->timeout, "max_attempts",
                                 (int)cc->max_attempts, "max_age", (json_int_t)cc->max_age,
                                 "rate_per_second", cc->rate_per_second, "burst", (int)cc->burst);
        if (!item)
            continue;
        for (int k = 0; k < n; k++) {
            if (strcmp(info[k].channel, ch->name) != 0)
                continue;
            json_object_set_new(item, "loaded", json_boolean(info[k].loaded));
            json_object_set_new(item, "path", json_string(info[k].path ? info[k].path : ""));
            json_object_set_new(item, "error", json_string(info[k].error ? info[k].error : ""));
            json_object_set_new(item, "version",
                                json_string(info[k].version ? info[k].version : ""));
            json_object_set_new(item, "description",
                                json_string(info[k].description ? info[k].description : ""));
            json_object_set_new(item, "abi",
                                json_sprintf("%u.%u", info[k].abi_major, info[k].abi_minor));
            json_object_set_new(item, "in_flight", json_integer(info[k].in_flight));
            json_object_set_new(item, "queued", json_integer(info[k].queued));
            json_object_set_new(item, "stuck", json_integer(info[k].stuck));
            json_object_set_new(item, "delivered", json_integer(info[k].delivered));
            json_object_set_new(item, "retried", json_integer(info[k].retried));
            json_object_set_new(item, "failed", json_integer(info[k].failed));
        }
        for (int k = 0; k < ds.n_channels; k++)
            if (strcmp(ds.channels[k].channel, ch->name) == 0) {
                const cad_dispatch_channel_stats_t *st = &ds.channels[k];
                json_object_set_new(item, "circuit",
                                    json_string(cad_circuit_state_name(st->circuit)));
                json_object_set_new(item, "disabled", json_boolean(st->disabled));
                json_object_set_new(item, "last_error", json_string(st->last_error));
                /* Outcomes since start, kept across reloads (the host's
                 * own counters start again with each host). */
                json_object_set_new(item, "delivered", json_integer(st->delivered));
                json_object_set_new(item, "retried", json_integer(st->retried));
                json_object_set_new(item, "failed", json_integer(st->dead));
                json_object_set_new(item, "withdrawn", json_integer(st->withdrawn));
                json_object_set_new(item, "held", json_integer(st->held));
            }
        json_array_append_new(list, item);
    }
    return json_pack("{s:s, s:o}", "plugin_dir", cfg->plugin_dir ? cfg->plugin_dir : "", "plugins",
                     list);
}

/* ---- metrics ------------------------------------------------------------------ */

typedef struct metrics_ctx {
    cad_metrics_t *m;
} metrics_ctx_t;

static void metrics_touch(const char *state, const char *channel, int64_t count, void *arg)
{
    const char *labels[] = {"state", state, "channel", channel, NULL};
    cad_metrics_sample(arg, "cadence_touches", labels, (double)count);
}

static json_t *cmd_metrics(json_t *req, const cad_control_peer_t *peer, void *arg,
                           cad_control_error_t *error)
{
    (void)peer;
    cad_commands_t *c = arg;
    static const char *const fields[] = {NULL};
    if (check_fields(req, fields, error) != 0)
        return NULL;
    cad_store_t *st = cad_daemon_store(c->d);
    cad_store_counts_t counts;
    char err[CAD_ERRBUF];
    int rc = cad_store_counts(st, &counts, err);
    if (rc != 0)
        return store_fail(error, rc, err);
    cad_metrics_t m;
    cad_metrics_init(&m);
    cad_metrics_family(&m, "cadence_customers", "gauge", "Customers in the store.");
    cad_metrics_sample(&m, "cadence_customers", NULL, (double)counts.customers);
    cad_metrics_family(&m, "cadence_customers_paused", "gauge", "Customers paused by operators.");
    cad_metrics_sample(&m, "cadence_customers_paused", NULL, (double)counts.customers_paused);
    cad_metrics_family(&m, "cadence_contacts", "gauge", "Contacts in the store.");
    cad_metrics_sample(&m, "cadence_contacts", NULL, (double)counts.contacts);
    cad_metrics_family(&m, "cadence_events", "gauge", "Events recorded.");
    cad_metrics_sample(&m, "cadence_events", NULL, (double)counts.events);
    cad_metrics_family(&m, "cadence_decisions_total", "counter",
                       "Customer evaluations recorded in the store.");
    cad_metrics_sample(&m, "cadence_decisions_total", NULL, (double)counts.decisions);

    cad_scheduler_stats_t ss = {0};
    cad_scheduler_t *sched = cad_daemon_scheduler(c->d);
    if (sched)
        cad_scheduler_get_stats(sched, &ss);
    cad_metrics_family(&m, "cadence_evaluations_total", "counter",
                       "Customer evaluations since the daemon started.");
    cad_metrics_sample(&m, "cadence_evaluations_total", NULL, (double)ss.evaluations);
    cad_metrics_family(&m, "cadence_verdicts_total", "counter",
                       "Verdicts recorded since the daemon started, by verdict.");
    const char *send[] = {"verdict", "send", NULL}, *defer[] = {"verdict", "defer", NULL},
               *supp[] = {"verdict", "suppress", NULL};
    cad_metrics_sample(&m, "cadence_verdicts_total", send, (double)ss.touches_decided);
    cad_metrics_sample(&m, "cadence_verdicts_total", defer, (double)ss.deferred);
    cad_metrics_sample(&m, "cadence_verdicts_total", supp, (double)ss.suppressed);
    cad_metrics_family(&m, "cadence_evaluation_errors_total", "counter",
                       "Evaluations that failed since the daemon started.");
    cad_metrics_sample(&m, "cadence_evaluation_errors_total", NULL, (double)ss.errors);
    cad_metrics_family(&m, "cadence_calendar_customers", "gauge",
                       "Customers in the live calendar.");
    cad_metrics_sample(&m, "cadence_calendar_customers", NULL, (double)ss.customers);

    cad_metrics_family(&m, "cadence_touches", "gauge",
                       "Touches by state and channel (dropped: final suppressions).");
    rc = cad_store_touch_counts_foreach(st, metrics_touch, &m, err);
    cad_metrics_family(&m, "cadence_queue_depth", "gauge",
                       "Touches waiting to be sent (queued or waiting to retry).");
    cad_metrics_sample(
        &m, "cadence_queue_depth", NULL,
        (double)(counts.outbox[CAD_OUTBOX_QUEUED] + counts.outbox[CAD_OUTBOX_RETRY_WAIT]));
    cad_metrics_family(&m, "cadence_alerts_open", "gauge", "Open operator alerts by kind.");
    const char *gap[] = {"kind", "content_gap", NULL}, *loop[] = {"kind", "loop_overdue", NULL},
               *silent[] = {"kind", "silent", NULL}, *dead[] = {"kind", "dead_touch", NULL};
    cad_metrics_sample(&m, "cadence_alerts_open", gap, (double)counts.alerts_content_gap);
    cad_metrics_sample(&m, "cadence_alerts_open", loop, (double)counts.alerts_loop_overdue);
    cad_metrics_sample(&m, "cadence_alerts_open", silent, (double)counts.alerts_silent);
    cad_metrics_sample(&m, "cadence_alerts_open", dead, (double)counts.outbox[CAD_OUTBOX_DEAD]);

    cad_dispatch_t *disp = cad_daemon_dispatch(c->d);
    cad_dispatch_stats_t ds = {0};
    if (disp)
        cad_dispatch_get_stats(disp, &ds);
    cad_metrics_family(&m, "cadence_dispatch_outcomes_total", "counter",
                       "Dispatch outcomes since the daemon started, by channel and outcome.");
    for (int i = 0; i < ds.n_channels; i++) {
        const cad_dispatch_channel_stats_t *ch = &ds.channels[i];
        const char *l1[] = {"channel", ch->channel, "outcome", "delivered", NULL};
        const char *l2[] = {"channel", ch->channel, "outcome", "retry", NULL};
        const char *l3[] = {"channel", ch->channel, "outcome", "dead", NULL};
        const char *l4[] = {"channel", ch->channel, "outcome", "withdrawn", NULL};
        cad_metrics_sample(&m, "cadence_dispatch_outcomes_total", l1, (double)ch->delivered);
        cad_metrics_sample(&m, "cadence_dispatch_outcomes_total", l2, (double)ch->retried);
        cad_metrics_sample(&m, "cadence_dispatch_outcomes_total", l3, (double)ch->dead);
        cad_metrics_sample(&m, "cadence_dispatch_outcomes_total", l4, (double)ch->withdrawn);
        const char *l5[] = {"channel", ch->channel, "outcome", "held", NULL};
        cad_metrics_sample(&m, "cadence_dispatch_outcomes_total", l5, (double)ch->held);
    }
    cad_metrics_family(&m, "cadence_dispatch_in_flight", "gauge",
                       "Touches handed to a plugin, outcome pending, by channel.");
    for (int i = 0; i < ds.n_channels; i++) {
        const char *l[] = {"channel", ds.channels[i].channel, NULL};
        cad_metrics_sample(&m, "cadence_dispatch_in_flight", l, ds.channels[i].in_flight);
    }
    cad_metrics_family(&m, "cadence_circuit_open", "gauge",
                       "1 when the channel's circuit is open or half-open (not sending freely).");
    for (int i = 0; i < ds.n_channels; i++) {
        const char *l[] = {"channel", ds.channels[i].channel, NULL};
        cad_metrics_sample(&m, "cadence_circuit_open", l,
                           ds.channels[i].circuit != CAD_CIRCUIT_CLOSED);
    }
    cad_metrics_family(&m, "cadence_channel_disabled", "gauge",
                       "1 when the channel's endpoint answered that it is gone (webhook 410): "
                       "nothing is sent until the configuration is reloaded.");
    for (int i = 0; i < ds.n_channels; i++) {
        const char *l[] = {"channel", ds.channels[i].channel, NULL};
        cad_metrics_sample(&m, "cadence_channel_disabled", l, ds.channels[i].disabled);
    }
    cad_plugin_host_t *host = cad_daemon_plugin_host(c->d);
    cad_plugin_info_t info[CAD_MAX_CHANNELS];
    int n_info = host ? cad_plugin_host_list(host, info, CAD_MAX_CHANNELS) : 0;
    cad_metrics_family(&m, "cadence_plugin_sends_stuck", "gauge",
                       "Blocking sends still inside the plugin past the channel's timeout (their "
                       "touches were given back; the threads stay taken), by channel.");
    for (int i = 0; i < n_info; i++) {
        const char *l[] = {"channel", info[i].channel, NULL};
        cad_metrics_sample(&m, "cadence_plugin_sends_stuck", l, info[i].stuck);
    }
    static const double bounds[] = {1, 5, 30, 60, 300, 900, 3600, 14400, 86400};
    int64_t buckets[CAD_ARRAY_LEN(bounds) + 1];
    double sum = 0;
    if (rc >= 0)
        rc = cad_store_delivery_latency(st, now_seconds() - CAD_DAY, bounds,
                                        (int)CAD_ARRAY_LEN(bounds), buckets, &sum, err);
    if (rc >= 0) {
        cad_metrics_family(&m, "cadence_delivery_latency_seconds", "histogram",
                           "Decision to delivery of the touches delivered in the last 24 hours.");
        cad_metrics_histogram(&m, "cadence_delivery_latency_seconds", bounds, buckets,
                              (int)CAD_ARRAY_LEN(bounds), sum);
    }

    int clients = 0;
    int64_t requests = 0;
    cad_control_stats(cad_daemon_control(c->d), &clients, &requests);
    cad_metrics_family(&m, "cadence_control_clients", "gauge",
                       "Clients connected to the control socket.");
    cad_metrics_sample(&m, "cadence_control_clients", NULL, (double)clients);
    cad_metrics_family(&m, "cadence_control_requests_total", "counter",
                       "Control requests answered since the daemon started.");
    cad_metrics_sample(&m, "cadence_control_requests_total", NULL, (double)requests);

    cad_store_checkpoint_stats_t ck;
    cad_store_checkpoint_counts(st, &ck);
    cad_metrics_family(&m, "cadence_store_checkpoints_total", "counter",
                       "WAL checkpoints since the daemon started, by where they ran (the "
                       "checkpoint thread, or the committing thread past its threshold) and "
                       "result.");
    static const char *const where[] = {"thread", "commit"};
    for (int w = 0; w < 2; w++) {
        const char *ok[] = {"where", where[w], "result", "ok", NULL};
        const char *busy[] = {"where", where[w], "result", "busy", NULL};
        const char *bad[] = {"where", where[w], "result", "failed", NULL};
        cad_metrics_sample(&m, "cadence_store_checkpoints_total", ok, (double)ck.ok[w]);
        cad_metrics_sample(&m, "cadence_store_checkpoints_total", busy, (double)ck.busy[w]);
        cad_metrics_sample(&m, "cadence_store_checkpoints_total", bad, (double)ck.failed[w]);
    }
    cad_metrics_family(&m, "cadence_store_wal_frames", "gauge",
                       "Frames in the WAL as the last checkpoint found it.");
    cad_metrics_sample(&m, "cadence_store_wal_frames", NULL, (double)ck.wal_frames);
    cad_metrics_family(&m, "cadence_store_wal_checkpointed_frames", "gauge",
                       "Of those, frames in the database after that checkpoint.");
    cad_metrics_sample(&m, "cadence_store_wal_checkpointed_frames", NULL,
                       (double)ck.wal_checkpointed);

    if (rc < 0 || m.failed) {
        cad_metrics_free(&m);
        return rc < 0 ? store_fail(error, rc, err) : oom(error);
    }
    json_t *out =
        json_pack("{s:s, s:s}", "content_type", "text/plain; version=0.0.4", "text", m.text);
    cad_metrics_free(&m);
    return out ? out : oom(error);
}

/* ---- registration and shutdown ------------------------------------------------ */

static void on_handle_closed(uv_handle_t *h)
{
    cad_commands_t *c = NULL;
    if (h->type == UV_TIMER) {
        c = h->data;
        c->open_handles--;
    } else {
        c = ((sim_job_t *)h->data)->owner;
    }
    if (c->stopping && c->open_handles == 0 && !c->stop_reported) {
        c->stop_reported = true;
        cad_daemon_service_stopped(c->d, "commands");
    }
}

static void on_stop(cad_daemon_t *d, void *arg)
{
    cad_commands_t *c = arg;
    c->stopping = true;
    /* Customers an import touched moments ago keep their next evaluation in
     * the store; the calendar is rebuilt from it at the next start. */
    if (c->rescan_init && !uv_is_closing((uv_handle_t *)&c->rescan)) {
        uv_close((uv_handle_t *)&c->rescan, on_handle_closed);
    }
    for (sim_job_t *j = c->jobs; j; j = j->next)
        if (!j->exited && !uv_is_closing((uv_handle_t *)&j->proc)) {
            cad_log_notice("shutdown: stopping a running forecast job=%d pid=%d", j->id,
                           j->proc.pid);
            uv_process_kill(&j->proc, SIGTERM);
        }
    if (c->open_handles == 0 && !c->stop_reported) {
        c->stop_reported = true;
        cad_daemon_service_stopped(d, "commands");
    }
}

typedef struct command_entry {
    const char *name;
    bool admin;
    cad_control_handler_fn fn;
} command_entry_t;

static const command_entry_t command_table[] = {
    {"customer.add", true, cmd_customer_add},
    {"customer.update", true, cmd_customer_update},
    {"customer.show", false, cmd_customer_show},
    {"customer.list", false, cmd_customer_list},
    {"contact.add", true, cmd_contact_add},
    {"contact.update", true, cmd_contact_update},
    {"contact.consent", true, cmd_contact_consent},
    {"contact.usable", true, cmd_contact_usable},
    {"suppression.add", true, cmd_suppression_add},
    {"suppression.remove", true, cmd_suppression_remove},
    {"suppression.list", false, cmd_suppression_list},
    {"event.add", true, cmd_event_add},
    {"import", true, cmd_import},
    {"calendar", false, cmd_calendar},
    {"why", false, cmd_why},
    {"simulate", false, cmd_simulate},
    {"simulate.output", false, cmd_simulate_output},
    {"pause", true, cmd_pause},
    {"resume", true, cmd_resume},
    {"outbox.list", false, cmd_outbox_list},
    {"outbox.retry", true, cmd_outbox_retry},
    {"outbox.cancel", true, cmd_outbox_cancel},
    {"outbox.show", false, cmd_outbox_show},
    {"alerts", false, cmd_alerts},
    {"report", false, cmd_report},
    {"holdout", false, cmd_holdout},
    {"plugins", false, cmd_plugins},
    {"metrics", false, cmd_metrics},
};

int cad_commands_register(cad_daemon_t *d, cad_commands_t **out, char *err)
{
    *out = NULL;
    cad_commands_t *c = calloc(1, sizeof(*c));
    if (!c)
        return cad_fail(err, CAD_ENOMEM, "out of memory");
    c->d = d;
    for (size_t i = 0; i < CAD_ARRAY_LEN(command_table); i++) {
        const command_entry_t *e = &command_table[i];
        int rc = cad_control_register(cad_daemon_control(d), e->name, e->admin, e->fn, c);
        if (rc != 0) {
            free(c);
            return cad_fail(err, -rc, "cannot register the control command %s: %s", e->name,
                            cad_strerror(rc));
        }
    }
    int rc = cad_daemon_add_service(d, "commands", on_stop, c);
    if (rc != 0) {
        free(c);
        return cad_fail(err, -rc, "cannot register the commands service: %s", cad_strerror(rc));
    }
    cad_control_set_group(
        cad_daemon_control(d),
        &(cad_control_group_t){.uncommitted = group_uncommitted, .commit = group_commit, .arg = c});
    /* Only event.add joins it: other writers keep their own transactions. */
    cad_control_set_grouped(cad_daemon_control(d), "event.add");
    *out = c;
    return 0;
}

void cad_commands_free(cad_commands_t *c)
{
    if (!c)
        return;
    while (c->jobs) {
        sim_job_t *j = c->jobs;
        c->jobs = j->next;
        job_free(j);
    }
    free(c->group_keys);
    free(c);
}
