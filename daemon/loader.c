/*
 * loader.c — streaming JSONL/CSV import into the store (see loader.h).
 *
 * One record at a time: a JSONL line is parsed with jansson, a CSV record
 * (which may span lines inside quotes) is split into cells mapped to fields
 * by the header. Both become a row_t that the per-kind validators read
 * through the same accessors, so the rules for a field are written once.
 * Validated rows go to the store's upsert/add functions inside a batch of
 * `batch_rows` rows; the store's savepoints keep a refused row from touching
 * the batch. Only store failures (disk full, I/O) stop the import.
 */
#include "loader.h"

#include "tz.h"
#include "units.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* ---- names -------------------------------------------------------------- */

static const char *const kind_names[] = {"customers", "contacts", "events"};

int cad_import_kind_parse(const char *name)
{
    for (unsigned i = 0; i < CAD_ARRAY_LEN(kind_names); i++)
        if (strcmp(kind_names[i], name) == 0)
            return (int)i;
    return -1;
}

const char *cad_import_kind_name(enum cad_import_kind kind)
{
    return (unsigned)kind < CAD_ARRAY_LEN(kind_names) ? kind_names[kind] : "unknown";
}

int cad_import_format_parse(const char *name)
{
    if (strcmp(name, "jsonl") == 0 || strcmp(name, "json") == 0 || strcmp(name, "ndjson") == 0)
        return CAD_IMPORT_JSONL;
    if (strcmp(name, "csv") == 0)
        return CAD_IMPORT_CSV;
    return -1;
}

int cad_import_format_from_path(const char *path)
{
    const char *dot = strrchr(path, '.');
    if (!dot || strchr(dot, '/'))
        return -1;
    char ext[16];
    size_t n = strlen(dot + 1);
    if (n == 0 || n >= sizeof(ext))
        return -1;
    for (size_t i = 0; i <= n; i++)
        ext[i] = (char)((dot[1 + i] >= 'A' && dot[1 + i] <= 'Z') ? dot[1 + i] + 32 : dot[1 + i]);
    return cad_import_format_parse(ext);
}

int cad_import_time_parse(const char *text, cad_time_t now, cad_time_t *out, char *err)
{
    if (strncmp(text, "now", 3) != 0)
        return cad_time_parse(text, out, err);
    const char *p = text + 3;
    if (*p == '\0') {
        *out = now;
        return 0;
    }
    if (*p != '+' && *p != '-')
        return cad_fail(err, CAD_EINVAL,
                        "'%s' is not a time: expected now, now-<duration> or now+<duration>", text);
    int64_t d;
    char derr[CAD_ERRBUF];
    if (cad_duration_parse(p + 1, &d, derr) < 0)
        return cad_fail(err, CAD_EINVAL, "'%s': %s", text, derr);
    *out = *p == '+' ? now + d : now - d;
    return 0;
}

/* ---- rows --------------------------------------------------------------- */

/* Fields of each kind: JSON keys, and CSV columns (which spread contact
 * consent over six columns). */
static const char *const customer_fields[] = {
    "id",        "name",       "timezone",   "stage",  "segment",
    "interests", "attributes", "created_at", "paused", NULL,
};
static const char *const contact_json_fields[] = {
    "id", "customer", "name", "first_name", "roles", "email", "phone", "consent", NULL,
};
static const char *const contact_csv_fields[] = {
    "id",
    "customer",
    "name",
    "first_name",
    "roles",
    "email",
    "phone",
    "email_opted_in",
    "email_consent_at",
    "email_consent_source",
    "sms_opted_in",
    "sms_consent_at",
    "sms_consent_source",
    NULL,
};
static const char *const event_fields[] = {"id", "customer", "type", "at", "data", NULL};

static const char *const *fields_of(enum cad_import_kind kind, enum cad_import_format format)
{
    switch (kind) {
    case CAD_IMPORT_CUSTOMERS: return customer_fields;
    case CAD_IMPORT_CONTACTS:
        return format == CAD_IMPORT_CSV ? contact_csv_fields : contact_json_fields;
    case CAD_IMPORT_EVENTS: return event_fields;
    }
    return event_fields;
}

#define MAX_FIELDS 16

typedef struct row {
    json_t *obj;                   /* JSONL: the object */
    const char *cells[MAX_FIELDS]; /* CSV: cell per field index, NULL when empty/absent */
    const char *const *names;      /* the kind's field names */
} row_t;

static int field_index(const char *const *names, const char *name)
{
    for (int i = 0; names[i]; i++)
        if (strcmp(names[i], name) == 0)
            return i;
    return -1;
}

/* A text field: 0 with *out (NULL when absent or empty), or -CAD_EINVAL. */
static int row_str(const row_t *r, const char *name, const char **out, char *msg)
{
    *out = NULL;
    if (!r->obj) {
        int i = field_index(r->names, name);
        *out = i >= 0 ? r->cells[i] : NULL;
        return 0;
    }
    json_t *v = json_object_get(r->obj, name);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return cad_fail(msg, CAD_EINVAL, "field %s: must be a string", name);
    *out = json_string_value(v);
    if (!**out)
        *out = NULL;
    return 0;
}

/* An address field of a contact: like row_str, but a JSON null removes the
 * address (*out = ""), as in a JSON merge patch (RFC 7396); an absent field
 * or an empty string (and any CSV cell) keeps it. */
static int row_address(const row_t *r, const char *name, const char **out, char *msg)
{
    if (r->obj && json_is_null(json_object_get(r->obj, name))) {
        *out = "";
        return 0;
    }
    return row_str(r, name, out, msg);
}

static int require(const char *value, const char *name, char *msg)
{
    return value ? 0 : cad_fail(msg, CAD_EINVAL, "field %s: required", name);
}

/* A list field (JSON array of strings, or a CSV cell "a;b") as "a,b" in
 * buf; *out NULL when absent. Each item is passed to check (may be NULL). */
static int row_list(const row_t *r, const char *name, char *buf, size_t size, const char **out,
                    int (*check)(const char *item, const void *ctx, char *msg), const void *ctx,
                    char *msg)
{
    *out = NULL;
    size_t n = 0;
    char item[CAD_NAME_MAX];
    if (r->obj) {
        json_t *v = json_object_get(r->obj, name);
        if (!v || json_is_null(v))
            return 0;
        if (!json_is_array(v))
            return cad_fail(msg, CAD_EINVAL, "field %s: must be an array of strings", name);
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e)
        {
            if (!json_is_string(e))
                return cad_fail(msg, CAD_EINVAL, "field %s: item %zu is not a string", name, i + 1);
            const char *s = json_string_value(e);
            size_t len = strlen(s);
            if (len == 0 || len >= CAD_NAME_MAX || strchr(s, ',') || strchr(s, ';'))
                return cad_fail(msg, CAD_EINVAL,
                                "field %s: item %zu must be 1-%d bytes without ',' or ';'", name,
                                i + 1, CAD_NAME_MAX - 1);
            if (check && check(s, ctx, msg) < 0)
                return -CAD_EINVAL;
            if (n + len + 2 > size)
                return cad_fail(msg, CAD_EINVAL, "field %s: list longer than %zu bytes", name,
                                size - 1);
            if (n)
                buf[n++] = ',';
            memcpy(buf + n, s, len);
            n += len;
        }
    } else {
        const char *cell;
        row_str(r, name, &cell, msg);
        if (!cell)
            return 0;
        const char *p = cell;
        while (*p) {
            while (*p == ' ' || *p == ';')
                p++;
            const char *start = p;
            while (*p && *p != ';')
                p++;
            const char *end = p;
            while (end > start && end[-1] == ' ')
                end--;
            size_t len = (size_t)(end - start);
            if (len == 0)
                continue;
            if (len >= CAD_NAME_MAX || memchr(start, ',', len))
                return cad_fail(
                    msg, CAD_EINVAL,
                    "field %s: items must be 1-%d bytes without ',' (separate with ';')", name,
                    CAD_NAME_MAX - 1);
            memcpy(item, start, len);
            item[len] = '\0';
            if (check && check(item, ctx, msg) < 0)
                return -CAD_EINVAL;
            if (n + len + 2 > size)
                return cad_fail(msg, CAD_EINVAL, "field %s: list longer than %zu bytes", name,
                                size - 1);
            if (n)
                buf[n++] = ',';
            memcpy(buf + n, item, len);
            n += len;
        }
    }
    buf[n] = '\0';
    *out = buf;
    return 0;
}

/* An object field as compact JSON text (*out owned by the caller, free()). */
static int row_object(const row_t *r, const char *name, char **out, char *msg)
{
    *out = NULL;
    json_t *v;
    json_t *parsed = NULL;
    if (r->obj) {
        v = json_object_get(r->obj, name);
    } else {
        const char *cell;
        row_str(r, name, &cell, msg);
        if (!cell)
            return 0;
        json_error_t jerr;
        parsed = json_loads(cell, JSON_REJECT_DUPLICATES, &jerr);
        if (!parsed)
            return cad_fail(msg, CAD_EINVAL, "field %s: not JSON: %s", name, jerr.text);
        v = parsed;
    }
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_object(v)) {
        json_decref(parsed);
        return cad_fail(msg, CAD_EINVAL, "field %s: must be a JSON object", name);
    }
    *out = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(parsed);
    if (!*out)
        return cad_fail(msg, CAD_ENOMEM, "field %s: out of memory", name);
    return 0;
}

/* A time field: ISO 8601 or relative text, or (JSON) integer seconds. */
static int row_time(const row_t *r, const char *name, cad_time_t now, cad_time_t *out,
                    bool *present, char *msg)
{
    *present = false;
    if (r->obj) {
        json_t *v = json_object_get(r->obj, name);
        if (v && json_is_integer(v)) {
            *out = json_integer_value(v);
            *present = true;
            if (*out < 0)
                return cad_fail(msg, CAD_EINVAL, "field %s: before 1970", name);
            return 0;
        }
    }
    const char *text;
    int rc = row_str(r, name, &text, msg);
    if (rc < 0) {
        return cad_fail(msg, CAD_EINVAL,
                        "field %s: must be an ISO 8601 time, now-<duration>"
                        " or seconds since 1970",
                        name);
    }
    if (!text)
        return 0;
    char terr[CAD_ERRBUF];
    if (cad_import_time_parse(text, now, out, terr) < 0)
        return cad_fail(msg, CAD_EINVAL, "field %s: %s", name, terr);
    if (*out < 0)
        return cad_fail(msg, CAD_EINVAL, "field %s: before 1970", name);
    *present = true;
    return 0;
}

static int parse_bool(const char *text, bool *out)
{
    static const char *const yes[] = {"true", "yes", "1", "y", "opted_in"};
    static const char *const no[] = {"false", "no", "0", "n", "opted_out"};
    for (unsigned i = 0; i < CAD_ARRAY_LEN(yes); i++) {
        if (strcasecmp(text, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(text, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

/* A boolean field: *out 1 or 0, -1 when absent. */
static int row_bool(const row_t *r, const char *name, int *out, char *msg)
{
    *out = -1;
    if (r->obj) {
        json_t *v = json_object_get(r->obj, name);
        if (!v || json_is_null(v))
            return 0;
        if (!json_is_boolean(v))
            return cad_fail(msg, CAD_EINVAL, "field %s: must be true or false", name);
        *out = json_is_true(v) ? 1 : 0;
        return 0;
    }
    const char *text;
    row_str(r, name, &text, msg);
    if (!text)
        return 0;
    bool b;
    if (parse_bool(text, &b) < 0)
        return cad_fail(msg, CAD_EINVAL, "field %s: '%s' is not true or false", name, text);
    *out = b ? 1 : 0;
    return 0;
}

/* Rejects JSON keys the kind does not know, so a typo never passes. */
static int check_keys(const row_t *r, char *msg)
{
    const char *key;
    json_t *v;
    json_object_foreach(r->obj, key, v)
    {
        if (field_index(r->names, key) < 0)
            return cad_fail(msg, CAD_EINVAL, "field %s: unknown field", key);
    }
    return 0;
}

/* ---- per kind ----------------------------------------------------------- */

typedef struct import_ctx {
    cad_store_t *st;
    const cad_playbook_t *pb;
    const cad_import_options_t *opt;
} import_ctx_t;

static int check_role(const char *item, const void *ctx, char *msg)
{
    const cad_playbook_t *pb = ctx;
    if (cad_playbook_role(pb, item) >= 0)
        return 0;
    char known[512] = "";
    size_t n = 0;
    for (int i = 0; i < pb->n_roles && n + CAD_NAME_MAX + 2 < sizeof(known); i++)
        n += (size_t)snprintf(known + n, sizeof(known) - n, "%s%s", i ? ", " : "", pb->roles[i]);
    return cad_fail(msg, CAD_EINVAL, "field roles: unknown role '%s' (known: %s)", item, known);
}

static int import_customer(import_ctx_t *c, const row_t *r, char *msg)
{
    cad_customer_input_t in = {0};
    char interests[4096];
    int rc;
    if ((rc = row_str(r, "id", &in.id, msg)) < 0 || (rc = require(in.id, "id", msg)) < 0 ||
        (rc = row_str(r, "name", &in.name, msg)) < 0 ||
        (rc = row_str(r, "timezone", &in.timezone, msg)) < 0 ||
        (rc = row_str(r, "stage", &in.stage, msg)) < 0 ||
        (rc = row_str(r, "segment", &in.segment, msg)) < 0 ||
        (rc = row_list(r, "interests", interests, sizeof(interests), &in.interests, NULL, NULL,
                       msg)) < 0)
        return rc;
    if (in.stage && cad_stage_parse(in.stage) < 0)
        return cad_fail(msg, CAD_EINVAL,
                        "field stage: unknown stage '%s' (prospect, onboarding, active, at_risk,"
                        " former)",
                        in.stage);
    if (in.timezone && !cad_tz_valid(in.timezone))
        return cad_fail(msg, CAD_EINVAL, "field timezone: unknown time zone '%s'", in.timezone);
    bool present;
    if ((rc = row_time(r, "created_at", c->opt->now, &in.created_at, &present, msg)) < 0)
        return rc;
    int paused;
    if ((rc = row_bool(r, "paused", &paused, msg)) < 0)
        return rc;
    char *attributes = NULL;
    if ((rc = row_object(r, "attributes", &attributes, msg)) < 0)
        return rc;
    in.attributes = attributes;
    rc = cad_store_customer_upsert(c->st, &in, c->opt->now, NULL, msg);
    free(attributes);
    /* R14: an operator's pause travels with the customer; absent keeps it */
    if (rc == 0 && paused >= 0)
        rc = cad_store_customer_pause(c->st, in.id, paused == 1, c->opt->now, msg);
    return rc;
}

static int consent_json(const row_t *r, const char *kind, cad_consent_input_t *out, cad_time_t now,
                        char *msg)
{
    json_t *consent = json_object_get(r->obj, "consent");
    if (!consent || json_is_null(consent))
        return 0;
    if (!json_is_object(consent))
        return cad_fail(msg, CAD_EINVAL, "field consent: must be an object with email/sms");
    const char *key;
    json_t *v;
    json_object_foreach(consent, key, v)
    {
        if (strcmp(key, "email") != 0 && strcmp(key, "sms") != 0)
            return cad_fail(msg, CAD_EINVAL, "field consent.%s: unknown kind (email, sms)", key);
    }
    v = json_object_get(consent, kind);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_object(v))
        return cad_fail(msg, CAD_EINVAL, "field consent.%s: must be an object", kind);
    json_object_foreach(v, key, consent)
    {
        if (strcmp(key, "opted_in") != 0 && strcmp(key, "at") != 0 && strcmp(key, "source") != 0)
            return cad_fail(msg, CAD_EINVAL, "field consent.%s.%s: unknown field", kind, key);
    }
    json_t *in = json_object_get(v, "opted_in");
    if (!json_is_boolean(in))
        return cad_fail(msg, CAD_EINVAL, "field consent.%s.opted_in: required, true or false",
                        kind);
    out->kind = kind;
    out->opted_in = json_is_true(in);
    json_t *at = json_object_get(v, "at");
    if (at && !json_is_null(at)) {
        char terr[CAD_ERRBUF];
        if (!json_is_string(at) ||
            cad_import_time_parse(json_string_value(at), now, &out->at, terr) < 0)
            return cad_fail(msg, CAD_EINVAL, "field consent.%s.at: %s", kind,
                            json_is_string(at) ? terr : "must be a time string");
    }
    json_t *source = json_object_get(v, "source");
    if (source && !json_is_null(source)) {
        if (!json_is_string(source))
            return cad_fail(msg, CAD_EINVAL, "field consent.%s.source: must be a string", kind);
        out->source = json_string_value(source);
    } else {
        out->source = "import";
    }
    return 0;
}

static int consent_csv(const row_t *r, const char *kind, cad_consent_input_t *out, cad_time_t now,
                       char *msg)
{
    char name[32];
    const char *opted, *at, *source;
    snprintf(name, sizeof(name), "%s_opted_in", kind);
    row_str(r, name, &opted, msg);
    snprintf(name, sizeof(name), "%s_consent_at", kind);
    row_str(r, name, &at, msg);
    snprintf(name, sizeof(name), "%s_consent_source", kind);
    row_str(r, name, &source, msg);
    if (!opted) {
        if (at || source)
            return cad_fail(msg, CAD_EINVAL, "field %s_opted_in: required when %s consent is given",
                            kind, kind);
        return 0;
    }
    if (parse_bool(opted, &out->opted_in) < 0)
        return cad_fail(msg, CAD_EINVAL, "field %s_opted_in: '%s' is not true or false", kind,
                        opted);
    out->kind = kind;
    if (at) {
        char terr[CAD_ERRBUF];
        if (cad_import_time_parse(at, now, &out->at, terr) < 0)
            return cad_fail(msg, CAD_EINVAL, "field %s_consent_at: %s", kind, terr);
    }
    out->source = source ? source : "import";
    return 0;
}

static int import_contact(import_ctx_t *c, const row_t *r, char *msg)
{
    cad_contact_input_t in = {0};
    char roles[1024];
    int rc;
    if ((rc = row_str(r, "id", &in.id, msg)) < 0 || (rc = require(in.id, "id", msg)) < 0 ||
        (rc = row_str(r, "customer", &in.customer_id, msg)) < 0 ||
        (rc = require(in.customer_id, "customer", msg)) < 0 ||
        (rc = row_str(r, "name", &in.name, msg)) < 0 ||
        (rc = row_str(r, "first_name", &in.first_name, msg)) < 0 ||
        (rc = row_address(r, "email", &in.email, msg)) < 0 ||
        (rc = row_address(r, "phone", &in.phone, msg)) < 0 ||
        (rc = row_list(r, "roles", roles, sizeof(roles), &in.roles, check_role, c->pb, msg)) < 0)
        return rc;
    if (r->obj) {
        if ((rc = consent_json(r, "email", &in.consent[0], c->opt->now, msg)) < 0 ||
            (rc = consent_json(r, "sms", &in.consent[1], c->opt->now, msg)) < 0)
            return rc;
    } else {
        if ((rc = consent_csv(r, "email", &in.consent[0], c->opt->now, msg)) < 0 ||
            (rc = consent_csv(r, "sms", &in.consent[1], c->opt->now, msg)) < 0)
            return rc;
    }
    if (in.consent[0].kind && (!in.email || !*in.email))
        return cad_fail(msg, CAD_EINVAL,
                        "contact %s: field consent.email: given without an email address", in.id);
    if (in.consent[1].kind && (!in.phone || !*in.phone))
        return cad_fail(msg, CAD_EINVAL,
                        "contact %s: field consent.sms: given without a phone number", in.id);
    return cad_store_contact_upsert(c->st, &in, c->opt->now, msg);
}

static int import_event(import_ctx_t *c, const row_t *r, char *msg)
{
    cad_event_input_t in = {0};
    int rc;
    if ((rc = row_str(r, "id", &in.id, msg)) < 0 || (rc = require(in.id, "id", msg)) < 0 ||
        (rc = row_str(r, "customer", &in.customer_id, msg)) < 0 ||
        (rc = require(in.customer_id, "customer", msg)) < 0 ||
        (rc = row_str(r, "type", &in.type, msg)) < 0 || (rc = require(in.type, "type", msg)) < 0)
        return rc;
    if (cad_playbook_event_type(c->pb, in.type) < 0)
        return cad_fail(msg, CAD_EINVAL, "field type: unknown event type '%s'", in.type);
    bool present;
    if ((rc = row_time(r, "at", c->opt->now, &in.at, &present, msg)) < 0)
        return rc;
    if (!present)
        return cad_fail(msg, CAD_EINVAL, "field at: required");
    char *data = NULL;
    if ((rc = row_object(r, "data", &data, msg)) < 0)
        return rc;
    in.data = data;
    rc = cad_store_event_add(c->st, &in, c->opt->now, msg);
    free(data);
    return rc;
}

static int import_row(import_ctx_t *c, const row_t *r, char *msg)
{
    switch (c->opt->kind) {
    case CAD_IMPORT_CUSTOMERS: return import_customer(c, r, msg);
    case CAD_IMPORT_CONTACTS: return import_contact(c, r, msg);
    case CAD_IMPORT_EVENTS: return import_event(c, r, msg);
    }
    return cad_fail(msg, CAD_EINVAL, "unknown import kind");
}

/* ---- CSV ---------------------------------------------------------------- */

/* Reads one RFC 4180 record into rec (cells NUL-separated in place, quotes
 * removed), following quoted newlines onto further lines. Returns the
 * number of cells, 0 at end of input, -CAD_EINVAL for a malformed record
 * (msg filled; the record is consumed), -CAD_EIO on a read error. */
static int csv_read(FILE *in, char **line, size_t *line_cap, char **rec, size_t *rec_cap,
                    const char **cells, int max_cells, int64_t *lineno, char *msg)
{
    size_t n = 0;
    int ncells = 0;
    bool quoted = false, started = false, overflow = false, too_many = false, bad_quote = false;
    bool closed = false; /* the current cell's closing quote was seen */
    size_t cell_start = 0;
    for (;;) {
        ssize_t len = getline(line, line_cap, in);
        if (len < 0) {
            if (ferror(in))
                return cad_fail(msg, CAD_EIO, "read error");
            if (!started)
                return 0;
            return cad_fail(msg, CAD_EINVAL, "unterminated quoted cell at end of input");
        }
        (*lineno)++;
        if (!started && (len == 0 || (*line)[0] == '\n' || strcmp(*line, "\r\n") == 0))
            continue; /* blank line between records */
        started = true;
        if (n + (size_t)len + 2 > *rec_cap) {
            size_t cap = *rec_cap ? *rec_cap : 4096;
            while (cap < n + (size_t)len + 2)
                cap *= 2;
            char *p = realloc(*rec, cap);
            if (!p)
                return cad_fail(msg, CAD_ENOMEM, "out of memory");
            *rec = p;
            *rec_cap = cap;
        }
        char *r = *rec;
        const char *s = *line;
        size_t i = 0, L = (size_t)len;
        bool at_cell_start = (n == cell_start) && !quoted;
        while (i < L) {
            char ch = s[i];
            if (quoted) {
                if (ch == '"') {
                    if (i + 1 < L && s[i + 1] == '"') {
                        r[n++] = '"';
                        i += 2;
                        continue;
                    }
                    quoted = false;
                    closed = true;
                    i++;
                    continue;
                }
                r[n++] = ch;
                i++;
                continue;
            }
            bool separator =
                ch == ',' || ch == '\n' || (ch == '\r' && i + 1 < L && s[i + 1] == '\n');
            if (closed && !separator)
                bad_quote = true; /* text after a closing quote: "a"b */
            if (ch == '"') {
                if (at_cell_start)
                    quoted = true;
                else
                    bad_quote = true;
                at_cell_start = false;
                i++;
                continue;
            }
            if (separator) {
                closed = false;
                r[n++] = '\0';
                if (ncells < max_cells)
                    cells[ncells] = r + cell_start;
                else
                    too_many = true;
                ncells++;
                cell_start = n;
                at_cell_start = true;
                if (ch == ',') {
                    i++;
                    continue;
                }
                break; /* end of record */
            }
            r[n++] = ch;
            at_cell_start = false;
            i++;
        }
        if (quoted) {
            if (n > CAD_IMPORT_MAX_LINE)
                overflow = true;
            if (overflow) {
                /* keep consuming to the closing quote, but stop storing */
                n = cell_start;
            }
            continue; /* a quoted newline: the record goes on */
        }
        if (i >= L && (L == 0 || s[L - 1] != '\n')) {
            /* last line without a newline */
            r[n++] = '\0';
            if (ncells < max_cells)
                cells[ncells] = r + cell_start;
            else
                too_many = true;
            ncells++;
        }
        break;
    }
    if (overflow || n > CAD_IMPORT_MAX_LINE)
        return cad_fail(msg, CAD_EINVAL, "record longer than %d bytes", CAD_IMPORT_MAX_LINE);
    if (bad_quote)
        return cad_fail(msg, CAD_EINVAL,
                        "a quote inside an unquoted cell or text after a closing quote"
                        " (quote the whole cell, double the quotes inside)");
    if (too_many)
        return cad_fail(msg, CAD_EINVAL, "more than %d cells", max_cells);
    return ncells;
}

/* ---- the import loop ---------------------------------------------------- */

typedef struct batch {
    cad_store_t *st;
    bool own; /* this import opened the batch */
    bool open;
    int64_t pending; /* accepted rows not yet committed */
    int64_t pending_dup;
    int rows;
} batch_t;

static int batch_flush(batch_t *b, cad_import_report_t *rep, char *err)
{
    if (b->own && b->open) {
        b->open = false;
        int r = cad_store_batch_commit(b->st, err);
        if (r < 0) {
            b->pending = b->pending_dup = 0;
            return r;
        }
    }
    rep->accepted += b->pending;
    rep->duplicates += b->pending_dup;
    b->pending = b->pending_dup = 0;
    b->rows = 0;
    return 0;
}

static void reject(const cad_import_options_t *opt, cad_import_report_t *rep, const char *source,
                   int64_t line, const char *problem)
{
    char message[CAD_ERRBUF + 128];
    snprintf(message, sizeof(message), "%s:%lld: %s", source, (long long)line, problem);
    if (rep->rejected == 0)
        snprintf(rep->first_error, sizeof(rep->first_error), "%.*s",
                 (int)sizeof(rep->first_error) - 1, message);
    rep->rejected++;
    if (opt->on_reject)
        opt->on_reject(message, opt->arg);
}

/* A store failure that must stop the import, as opposed to a bad row. */
static bool fatal_code(int r)
{
    return r == -CAD_EFULL || r == -CAD_EIO || r == -CAD_ESTORE || r == -CAD_ENOMEM ||
           r == -CAD_EBUSY || r == -CAD_EPERM;
}

int cad_import(cad_store_t *st, const cad_playbook_t *pb, FILE *in, const cad_import_options_t *opt,
               cad_import_report_t *rep, char *err)
{
    memset(rep, 0, sizeof(*rep));
    if ((unsigned)opt->kind >= CAD_ARRAY_LEN(kind_names))
        return cad_fail(err, CAD_EINVAL, "import: unknown kind %d", (int)opt->kind);
    if (opt->format != CAD_IMPORT_JSONL && opt->format != CAD_IMPORT_CSV)
        return cad_fail(err, CAD_EINVAL, "import: unknown format %d", (int)opt->format);
    const char *source = opt->source ? opt->source : "input";
    int batch_rows = opt->batch_rows > 0 ? opt->batch_rows : CAD_IMPORT_BATCH_ROWS;
    cad_import_options_t o = *opt;
    if (o.now <= 0)
        o.now = (cad_time_t)time(NULL); /* no clock given: the wall clock */
    opt = &o;
    import_ctx_t ctx = {st, pb, opt};
    batch_t b = {.st = st, .own = !cad_store_in_batch(st)};
    const char *const *names = fields_of(opt->kind, opt->format);
    char *line = NULL, *rec = NULL;
    size_t line_cap = 0, rec_cap = 0;
    int64_t lineno = 0;
    int result = 0;
    char msg[CAD_ERRBUF];

    /* CSV: the header maps columns to fields */
    int colmap[MAX_FIELDS * 2];
    int ncols = 0;
    const char *cells[MAX_FIELDS * 2];
    if (opt->format == CAD_IMPORT_CSV) {
        int n = csv_read(in, &line, &line_cap, &rec, &rec_cap, cells, MAX_FIELDS * 2, &lineno, msg);
        if (n <= 0) {
            result =
                n == 0
                    ? cad_fail(err, CAD_EINVAL, "%s: empty input: no CSV header row", source)
                    : cad_fail(err, -n, "%s:%lld: CSV header: %s", source, (long long)lineno, msg);
            goto done;
        }
        bool seen[MAX_FIELDS] = {false};
        for (int i = 0; i < n; i++) {
            const char *h = cells[i];
            while (*h == ' ')
                h++;
            if (i == 0 && (unsigned char)h[0] == 0xef && (unsigned char)h[1] == 0xbb &&
                (unsigned char)h[2] == 0xbf)
                h += 3; /* UTF-8 byte order mark */
            int f = field_index(names, h);
            if (f < 0) {
                result =
                    cad_fail(err, CAD_EINVAL, "%s:%lld: CSV header: unknown column '%s' for %s",
                             source, (long long)lineno, h, kind_names[opt->kind]);
                goto done;
            }
            if (seen[f]) {
                result = cad_fail(err, CAD_EINVAL, "%s:%lld: CSV header: column '%s' twice", source,
                                  (long long)lineno, h);
                goto done;
            }
            seen[f] = true;
            colmap[i] = f;
        }
        ncols = n;
        if (!seen[0]) {
            result = cad_fail(err, CAD_EINVAL, "%s:%lld: CSV header: no 'id' column", source,
                              (long long)lineno);
            goto done;
        }
    }

    for (;;) {
        row_t row = {.names = names};
        json_t *obj = NULL;
        int64_t first_line;
        int rc;
        if (opt->format == CAD_IMPORT_CSV) {
            int64_t before = lineno;
            int n =
                csv_read(in, &line, &line_cap, &rec, &rec_cap, cells, MAX_FIELDS * 2, &lineno, msg);
            first_line = before + 1;
            if (n == 0)
                break;
            if (n == -CAD_EIO || n == -CAD_ENOMEM) {
                result = cad_fail(err, -n, "%s:%lld: %s", source, (long long)lineno, msg);
                break;
            }
            rep->records++;
            if (n < 0) {
                reject(opt, rep, source, first_line, msg);
                continue;
            }
            if (n != ncols) {
                snprintf(msg, sizeof(msg), "%d cells, the header has %d", n, ncols);
                reject(opt, rep, source, first_line, msg);
                continue;
            }
            for (int i = 0; i < n; i++)
                row.cells[colmap[i]] = cells[i][0] ? cells[i] : NULL;
        } else {
            ssize_t len = getline(&line, &line_cap, in);
            if (len < 0) {
                if (ferror(in))
                    result = cad_fail(err, CAD_EIO, "%s:%lld: read error", source,
                                      (long long)lineno + 1);
                break;
            }
            first_line = ++lineno;
            while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
                line[--len] = '\0';
            size_t sp = strspn(line, " \t");
            if ((ssize_t)sp == len)
                continue; /* blank line */
            rep->records++;
            if (len > CAD_IMPORT_MAX_LINE) {
                snprintf(msg, sizeof(msg), "line longer than %d bytes", CAD_IMPORT_MAX_LINE);
                reject(opt, rep, source, first_line, msg);
                continue;
            }
            json_error_t jerr;
            obj = json_loadb(line, (size_t)len, JSON_REJECT_DUPLICATES, &jerr);
            if (!obj) {
                snprintf(msg, sizeof(msg), "not JSON: %s (column %d)", jerr.text, jerr.column);
                reject(opt, rep, source, first_line, msg);
                continue;
            }
            if (!json_is_object(obj)) {
                json_decref(obj);
                reject(opt, rep, source, first_line, "not a JSON object");
                continue;
            }
            row.obj = obj;
            if (check_keys(&row, msg) < 0) {
                json_decref(obj);
                reject(opt, rep, source, first_line, msg);
                continue;
            }
        }

        if (b.own && !b.open) {
            if ((result = cad_store_batch_begin(st, err)) < 0) {
                json_decref(obj);
                break;
            }
            b.open = true;
        }
        msg[0] = '\0';
        rc = import_row(&ctx, &row, msg);
        json_decref(obj);
        if (rc == 0) {
            b.pending++;
        } else if (rc == -CAD_EEXIST && opt->kind == CAD_IMPORT_EVENTS) {
            b.pending_dup++;
        } else if (fatal_code(rc)) {
            result = cad_fail(err, -rc, "%s:%lld: %s", source, (long long)first_line, msg);
            break;
        } else {
            reject(opt, rep, source, first_line, msg);
        }
        if (++b.rows >= batch_rows && (result = batch_flush(&b, rep, err)) < 0)
            break;
    }
    if (result == 0) {
        result = batch_flush(&b, rep, err);
    } else if (b.own && b.open) {
        cad_store_batch_rollback(st);
        b.open = false;
    }
done:
    free(line);
    free(rec);
    return result;
}
