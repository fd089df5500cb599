/*
 * store_sqlite.c — the store (store.h) on SQLite.
 *
 * One connection, owned by the loop thread, in WAL mode with foreign keys on
 * and a busy timeout for the odd second reader (cadencectl over a read-only
 * connection). The schema is created and moved forward by an ordered list of
 * migration steps keyed by PRAGMA user_version; each step runs in its own
 * transaction, so a database is always at exactly one version.
 *
 * Every SQL statement is prepared once at open into an array indexed by
 * enum stmt_id and reset after each use; no call prepares SQL again.
 *
 * Writes: inside a batch (BEGIN IMMEDIATE ... COMMIT, the daemon's group
 * commit) every write function wraps its own statements in a SAVEPOINT, so a
 * refused write is undone alone and the batch goes on. The two hot import
 * paths (customer upsert, event add) skip the savepoint, which costs ~10% of
 * an import: their only statement that can refuse a row runs first and writes
 * nothing, and a store failure there rolls the whole batch back. Outside a
 * batch every write function is its own transaction. Either way a failure
 * (disk full, I/O error, constraint) leaves nothing half-written; after a
 * store failure inside a batch, cad_store_in_batch() says whether the batch
 * survived.
 *
 * Names stay names in the database (stage, segment, roles, rule, channel,
 * event type) so a playbook change never invalidates stored rows; the
 * snapshot loader resolves them against the current playbook.
 */
#include "store.h"
#include "store_checkpoint.h"

#include "log.h"
#include "tz.h"

#include <ctype.h>
#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <uv.h>

#define TRACE_KEEP    50                /* trace rows kept per customer */
#define TOUCH_KEY_MAX CAD_TOUCH_KEY_MAX /* customer/rule/e:event, percent-encoded, NUL */
/* The longest key: two ids at their limits (check_id allows CAD_ID_MAX bytes),
 * each byte percent-encoded, a rule name, "/", "/e:" and the NUL; the
 * "/p<number>" form is shorter. */
_Static_assert(TOUCH_KEY_MAX >= 2 * 3 * CAD_ID_MAX + CAD_NAME_MAX + 4 + 1,
               "TOUCH_KEY_MAX must hold the longest idempotency key");
#define BUSY_TIMEOUT_MS 5000

/* ---- schema ------------------------------------------------------------- */

/* Version 1: customers, contacts, consents, events, the outbox/history and
 * the decision traces. */
static const char schema_v1[] =
    "CREATE TABLE customers ("
    " key INTEGER PRIMARY KEY,"
    " id TEXT NOT NULL UNIQUE,"
    " name TEXT NOT NULL DEFAULT '',"
    " timezone TEXT NOT NULL DEFAULT 'UTC',"
    " stage TEXT NOT NULL DEFAULT 'prospect',"
    " segment TEXT NOT NULL DEFAULT 'default',"
    " interests TEXT NOT NULL DEFAULT '',"
    " attributes TEXT NOT NULL DEFAULT '{}',"
    " paused INTEGER NOT NULL DEFAULT 0,"
    " created_at INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL,"
    " next_eval INTEGER NOT NULL);"
    "CREATE INDEX customers_next_eval ON customers(next_eval);"
    "CREATE TABLE contacts ("
    " key INTEGER PRIMARY KEY,"
    " id TEXT NOT NULL UNIQUE,"
    " customer_key INTEGER NOT NULL REFERENCES customers(key) ON DELETE CASCADE,"
    " name TEXT NOT NULL DEFAULT '',"
    " first_name TEXT NOT NULL DEFAULT '',"
    " roles TEXT NOT NULL DEFAULT '',"
    " email TEXT NOT NULL DEFAULT '',"
    " phone TEXT NOT NULL DEFAULT '');"
    "CREATE INDEX contacts_customer ON contacts(customer_key);"
    "CREATE TABLE consents ("
    " contact_key INTEGER NOT NULL REFERENCES contacts(key) ON DELETE CASCADE,"
    " kind TEXT NOT NULL,"
    " opted_in INTEGER NOT NULL,"
    " at INTEGER NOT NULL,"
    " source TEXT NOT NULL DEFAULT '',"
    " PRIMARY KEY (contact_key, kind));"
    "CREATE TABLE contact_channels ("
    " contact_key INTEGER NOT NULL REFERENCES contacts(key) ON DELETE CASCADE,"
    " channel TEXT NOT NULL,"
    " reason TEXT NOT NULL DEFAULT '',"
    " at INTEGER NOT NULL,"
    " PRIMARY KEY (contact_key, channel));"
    "CREATE TABLE suppressions ("
    " address TEXT PRIMARY KEY,"
    " reason TEXT NOT NULL DEFAULT '',"
    " at INTEGER NOT NULL);"
    "CREATE TABLE events ("
    " key INTEGER PRIMARY KEY,"
    " id TEXT NOT NULL UNIQUE,"
    " customer_key INTEGER NOT NULL REFERENCES customers(key) ON DELETE CASCADE,"
    " type TEXT NOT NULL,"
    " at INTEGER NOT NULL,"
    " data TEXT NOT NULL DEFAULT '{}',"
    " received_at INTEGER NOT NULL);"
    "CREATE INDEX events_customer_at ON events(customer_key, at);"
    "CREATE TABLE touches ("
    " key INTEGER PRIMARY KEY,"
    " idempotency_key TEXT NOT NULL UNIQUE,"
    " customer_key INTEGER NOT NULL REFERENCES customers(key) ON DELETE CASCADE,"
    " rule TEXT NOT NULL,"
    " purpose TEXT NOT NULL,"
    " channel TEXT NOT NULL DEFAULT '',"
    " contact_key INTEGER REFERENCES contacts(key) ON DELETE SET NULL,"
    " content_id TEXT NOT NULL DEFAULT '',"
    " trigger_key INTEGER NOT NULL,"
    " state TEXT NOT NULL,"
    " attempt INTEGER NOT NULL DEFAULT 0,"
    " decided_at INTEGER NOT NULL,"
    " due_at INTEGER NOT NULL,"
    " expires_at INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL,"
    " last_error TEXT NOT NULL DEFAULT '',"
    " provider_id TEXT NOT NULL DEFAULT '');"
    "CREATE INDEX touches_customer_decided ON touches(customer_key, decided_at);"
    "CREATE TABLE traces ("
    " key INTEGER PRIMARY KEY,"
    " customer_key INTEGER NOT NULL REFERENCES customers(key) ON DELETE CASCADE,"
    " at INTEGER NOT NULL,"
    " rule TEXT NOT NULL,"
    " verdict TEXT NOT NULL,"
    " reason TEXT NOT NULL,"
    " sentence TEXT NOT NULL DEFAULT '',"
    " channel TEXT NOT NULL DEFAULT '',"
    " contact TEXT NOT NULL DEFAULT '',"
    " content TEXT NOT NULL DEFAULT '',"
    " until INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX traces_customer ON traces(customer_key, key);"
    "CREATE TABLE counters ("
    " name TEXT PRIMARY KEY,"
    " value INTEGER NOT NULL);";

/* Version 2: operator alerts (content gaps, overdue feedback loops, silent
 * customers) and the dispatcher's index over due touches. */
static const char schema_v2[] =
    "CREATE TABLE alerts ("
    " key INTEGER PRIMARY KEY,"
    " kind TEXT NOT NULL,"
    " customer_key INTEGER NOT NULL REFERENCES customers(key) ON DELETE CASCADE,"
    " rule TEXT NOT NULL DEFAULT '',"
    " detail TEXT NOT NULL DEFAULT '',"
    " first_at INTEGER NOT NULL,"
    " last_at INTEGER NOT NULL,"
    " closed_at INTEGER NOT NULL DEFAULT 0,"
    " open INTEGER NOT NULL DEFAULT 1);"
    "CREATE UNIQUE INDEX alerts_open ON alerts(kind, customer_key, rule) WHERE open = 1;"
    "CREATE INDEX touches_state_due ON touches(state, due_at);";

/* Version 3: the content library as the daemon last loaded it, so touches,
 * traces and reports can name content items even after the config drops
 * them (in_library = 0 then). */
static const char schema_v3[] =
    "CREATE TABLE content ("
    " id TEXT PRIMARY KEY,"
    " purpose TEXT NOT NULL,"
    " title TEXT NOT NULL DEFAULT '',"
    " url TEXT NOT NULL DEFAULT '',"
    " topics TEXT NOT NULL DEFAULT '',"
    " stages TEXT NOT NULL DEFAULT '',"
    " valid_from INTEGER NOT NULL DEFAULT 0,"
    " valid_until INTEGER NOT NULL DEFAULT 0,"
    " in_library INTEGER NOT NULL DEFAULT 1,"
    " first_seen INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL);"
    "CREATE INDEX touches_content ON touches(content_id) WHERE content_id <> '';";

/* Version 4: partial indexes over the touches still to send, so that the
 * dispatcher's claim reads them in due order without sorting the backlog,
 * and the expiry sweep visits only expired rows, however long the queue;
 * and maybe_delivered_at, the latest attempt that failed without an answer
 * after its request left (or that a crash left in flight), 0 for none: the
 * engine then counts the touch as sent at that time even if it dies later. */
static const char schema_v4[] =
    "ALTER TABLE touches ADD COLUMN maybe_delivered_at INTEGER NOT NULL DEFAULT 0;"
    "CREATE INDEX touches_pending_due ON touches(channel, due_at)"
    " WHERE state IN ('queued', 'retry_wait');"
    "CREATE INDEX touches_pending_expiry ON touches(expires_at)"
    " WHERE state IN ('queued', 'retry_wait');";

/* Version 5: the address a contact's channel was marked unusable for (the
 * email, lower-cased, or the phone; '' for channels without an address, and
 * for marks made before). A mark holds while the contact still has that
 * address: a corrected address is usable again. */
static const char schema_v5[] =
    "ALTER TABLE contact_channels ADD COLUMN address TEXT NOT NULL DEFAULT '';";

/* Version 6: every transition of a touch, with its time and attempt
 * number, kept by triggers so that no writer of the outbox (dispatcher,
 * operator, start-up recovery) can leave one out: the row's state as it
 * was written, and the provider id (delivered) or the error (otherwise).
 * Touches that exist already get one row: their state at the upgrade. */
static const char schema_v6[] =
    "CREATE TABLE touch_transitions ("
    " key INTEGER PRIMARY KEY,"
    " touch_key INTEGER NOT NULL REFERENCES touches(key) ON DELETE CASCADE,"
    " at INTEGER NOT NULL,"
    " state TEXT NOT NULL,"
    " attempt INTEGER NOT NULL,"
    " detail TEXT NOT NULL DEFAULT '');"
    "CREATE INDEX touch_transitions_touch ON touch_transitions(touch_key, key);"
    "INSERT INTO touch_transitions(touch_key, at, state, attempt, detail)"
    " SELECT key, updated_at, state, attempt,"
    " CASE state WHEN 'delivered' THEN provider_id ELSE last_error END FROM touches;"
    "CREATE TRIGGER touches_transition_new AFTER INSERT ON touches BEGIN"
    " INSERT INTO touch_transitions(touch_key, at, state, attempt, detail)"
    " VALUES (NEW.key, NEW.updated_at, NEW.state, NEW.attempt, NEW.last_error); END;"
    "CREATE TRIGGER touches_transition AFTER UPDATE OF state, attempt ON touches"
    " WHEN NEW.state <> OLD.state OR NEW.attempt <> OLD.attempt BEGIN"
    " INSERT INTO touch_transitions(touch_key, at, state, attempt, detail)"
    " VALUES (NEW.key, NEW.updated_at, NEW.state, NEW.attempt,"
    " CASE NEW.state WHEN 'delivered' THEN NEW.provider_id WHEN 'in_flight' THEN ''"
    " ELSE NEW.last_error END); END;";

static const char *const migrations[] = {schema_v1, schema_v2, schema_v3,
                                         schema_v4, schema_v5, schema_v6};

int cad_store_schema_version(void)
{
    return (int)CAD_ARRAY_LEN(migrations);
}

/* ---- statements --------------------------------------------------------- */

enum stmt_id {
    S_BEGIN,
    S_COMMIT,
    S_ROLLBACK,
    S_SAVEPOINT,
    S_RELEASE,
    S_ROLLBACK_TO,
    S_CUSTOMER_UPSERT,
    S_CUSTOMER_KEY,
    S_CUSTOMER_GET,
    S_CUSTOMER_PAUSE,
    S_CUSTOMER_NEXT_EVAL,
    S_CUSTOMER_TOUCH_EVAL,
    S_SCHEDULE_ALL,
    S_CONTACT_UPSERT,
    S_CONTACT_KEY,
    S_CONTACT_EXISTS,
    S_CONSENT_UPSERT,
    S_CONTACT_UNUSABLE,
    S_CONTACT_USABLE,
    S_SUPPRESS,
    S_UNSUPPRESS,
    S_CUSTOMERS_OF_ADDRESS,
    S_SCHEDULE_ADDRESS,
    S_SUPPRESSION_LIST,
    S_EVENT_INSERT,
    S_SNAP_CONTACTS,
    S_SNAP_UNUSABLE,
    S_SNAP_EVENTS,
    S_SNAP_HISTORY,
    S_TOUCH_INSERT,
    S_TRACE_INSERT,
    S_TRACE_TRIM,
    S_TRACE_LIST,
    S_COUNTER_ADD,
    S_ALERT_OPEN,
    S_ALERT_CLOSE,
    S_OUTBOX_EXPIRE,
    S_OUTBOX_DUE,
    S_OUTBOX_CLAIM_ONE,
    S_OUTBOX_DELIVERED,
    S_OUTBOX_RETRY,
    S_OUTBOX_DEAD,
    S_OUTBOX_STATE,
    S_OUTBOX_REQUEUE,
    S_OUTBOX_NEXT_DUE,
    S_OUTBOX_DUE_CHANNEL,
    S_OUTBOX_NEXT_DUE_CHANNEL,
    S_OUTBOX_RELEASE,
    S_OUTBOX_WITHDRAW,
    S_OUTBOX_MAYBE_DELIVERED,
    S_COUNT_CUSTOMERS,
    S_COUNT_CONTACTS,
    S_COUNT_EVENTS,
    S_COUNT_DECISIONS,
    S_COUNT_OUTBOX,
    S_COUNT_ALERTS,
    S_COUNT_BACKLOG,
    S_USER_VERSION,
    S_OUTBOX_LIST,
    S_OUTBOX_CANCEL,
    S_OUTBOX_REQUEUE_ONE,
    S_OUTBOX_REQUEUE_DEAD,
    S_OUTBOX_ONE,
    S_OUTBOX_RETRY_UNSENT,
    S_OUTBOX_COUNT_DEAD,
    S_OUTBOX_CLOCK_BACK,
    S_OUTBOX_CLOCK_FORWARD,
    S_OUTBOX_DEAD_UNSENT,
    S_OUTBOX_HISTORY,
    S_COUNT_ALERT_KINDS,
    S_COUNT_PAUSED,
    S_CUSTOMER_SHOW,
    S_CONTACT_LIST,
    S_ALERT_LIST,
    S_REPORT,
    S_CUSTOMER_LIST,
    S_CALENDAR,
    S_CALENDAR_RULE,
    S_DUE_BETWEEN,
    S_HOLDOUT,
    S_TOUCH_COUNTS,
    S_CONTACT_OWNER,
    S_DELIVERY_LATENCY,
    S_CONTENT_RETIRE,
    S_CONTENT_UPSERT,
    S_COUNT
};

/* Whether a contact_channels row (columns unqualified or cc.) still holds
 * for the contact aliased `c`: marked without an address, or for the
 * address the contact still has. */
#define UNUSABLE_HOLDS(c) "(address = '' OR address = lower(" c ".email) OR address = " c ".phone)"

/* An outbox row with what the dispatcher needs: the key, OUTBOX_STRINGS
 * strings, then attempt, decided_at, due_at, expires_at, customer_key,
 * contact_key, updated_at. */
#define OUTBOX_COLUMNS                                                                             \
    "SELECT t.key, t.idempotency_key, cu.id, COALESCE(co.id, ''), t.rule, t.purpose, t.channel,"   \
    " t.content_id, cu.name, cu.attributes, COALESCE(co.name, ''), COALESCE(co.first_name, ''),"   \
    " COALESCE(co.email, ''), COALESCE(co.phone, ''), t.state, t.last_error, t.provider_id,"       \
    " t.attempt, t.decided_at, t.due_at, t.expires_at, t.customer_key,"                            \
    " COALESCE(t.contact_key, 0), t.updated_at"
#define OUTBOX_JOINS                                                                               \
    " JOIN customers cu ON cu.key = t.customer_key"                                                \
    " LEFT JOIN contacts co ON co.key = t.contact_key"
#define OUTBOX_SELECT OUTBOX_COLUMNS " FROM touches t" OUTBOX_JOINS
/* What the dispatcher checks again as it claims a touch, since the contact
 * may have changed while it waited (R10): email and SMS consent, each
 * address on the suppression list, the touch's channel marked unusable. */
#define OUTBOX_SEND_CHECKS                                                                         \
    ", COALESCE((SELECT opted_in FROM consents"                                                    \
    " WHERE contact_key = t.contact_key AND kind = 'email'), 0),"                                  \
    " COALESCE((SELECT opted_in FROM consents WHERE contact_key = t.contact_key AND kind = "       \
    "'sms'),"                                                                                      \
    " 0), co.email <> '' AND EXISTS (SELECT 1 FROM suppressions WHERE address = lower(co.email))," \
    " co.phone <> '' AND EXISTS (SELECT 1 FROM suppressions WHERE address = co.phone),"            \
    " EXISTS (SELECT 1 FROM contact_channels WHERE contact_key = t.contact_key"                    \
    " AND channel = t.channel AND " UNUSABLE_HOLDS("co") ")"
/* Due touches to claim, read through the named index (the planner has no
 * statistics and would otherwise sort the whole backlog). A paused
 * customer's touches wait (R14). */
#define OUTBOX_CLAIM_FROM(index)                                                                   \
    OUTBOX_COLUMNS OUTBOX_SEND_CHECKS " FROM touches t INDEXED BY " index OUTBOX_JOINS
#define OUTBOX_STRINGS 16

static const char *const stmt_sql[S_COUNT] = {
    [S_BEGIN] = "BEGIN IMMEDIATE",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
    [S_SAVEPOINT] = "SAVEPOINT cad_write",
    [S_RELEASE] = "RELEASE cad_write",
    [S_ROLLBACK_TO] = "ROLLBACK TO cad_write",
    [S_CUSTOMER_UPSERT] =
        "INSERT INTO customers (id, name, timezone, stage, segment, interests, attributes,"
        " paused, created_at, updated_at, next_eval)"
        " VALUES (?1, COALESCE(?2, ''), COALESCE(?3, 'UTC'), COALESCE(?4, 'prospect'),"
        " COALESCE(?5, 'default'), COALESCE(?6, ''), COALESCE(?7, '{}'), 0,"
        " CASE WHEN ?8 = 0 THEN ?9 ELSE ?8 END, ?9, ?9)"
        " ON CONFLICT (id) DO UPDATE SET name = COALESCE(?2, name),"
        " timezone = COALESCE(?3, timezone), stage = COALESCE(?4, stage),"
        " segment = COALESCE(?5, segment), interests = COALESCE(?6, interests),"
        " attributes = COALESCE(?7, attributes),"
        " created_at = CASE WHEN ?8 = 0 THEN created_at ELSE ?8 END,"
        " updated_at = ?9, next_eval = ?9"
        " RETURNING key",
    [S_CUSTOMER_KEY] = "SELECT key FROM customers WHERE id = ?1",
    [S_CUSTOMER_GET] = "SELECT id, stage, segment, interests, timezone, paused, created_at"
                       " FROM customers WHERE key = ?1",
    [S_CUSTOMER_PAUSE] =
        "UPDATE customers SET paused = ?2, updated_at = ?3, next_eval = ?3 WHERE id = ?1",
    [S_CUSTOMER_NEXT_EVAL] = "UPDATE customers SET next_eval = ?2 WHERE key = ?1",
    [S_CUSTOMER_TOUCH_EVAL] =
        "UPDATE customers SET next_eval = ?2 WHERE key = ?1 AND next_eval > ?2",
    [S_SCHEDULE_ALL] = "SELECT key, next_eval FROM customers ORDER BY next_eval",
    [S_CONTACT_UPSERT] =
        "INSERT INTO contacts (id, customer_key, name, first_name, roles, email, phone)"
        " VALUES (?1, ?2, COALESCE(?3, ''), COALESCE(?4, ''), COALESCE(?5, ''),"
        " COALESCE(?6, ''), COALESCE(?7, ''))"
        " ON CONFLICT (id) DO UPDATE SET customer_key = ?2, name = COALESCE(?3, name),"
        " first_name = COALESCE(?4, first_name), roles = COALESCE(?5, roles),"
        " email = COALESCE(?6, email), phone = COALESCE(?7, phone)"
        " RETURNING key",
    [S_CONTACT_KEY] = "SELECT key, customer_key FROM contacts WHERE id = ?1",
    [S_CONTACT_EXISTS] = "SELECT customer_key FROM contacts WHERE key = ?1",
    [S_CONSENT_UPSERT] = "INSERT INTO consents (contact_key, kind, opted_in, at, source)"
                         " VALUES (?1, ?2, ?3, ?4, COALESCE(?5, ''))"
                         " ON CONFLICT (contact_key, kind) DO UPDATE SET opted_in = ?3,"
                         " at = ?4, source = COALESCE(?5, '')",
    [S_CONTACT_UNUSABLE] =
        "INSERT INTO contact_channels (contact_key, channel, reason, at, address)"
        " SELECT ?1, ?2, ?3, ?4, CASE ?5 WHEN 'email' THEN lower(email) WHEN 'phone' THEN phone"
        " ELSE '' END FROM contacts WHERE key = ?1"
        /* no address left to mark: the mark would hold for any later one */
        " AND (?5 = 'none' OR (CASE ?5 WHEN 'email' THEN email ELSE phone END) <> '')"
        " ON CONFLICT (contact_key, channel)"
        " DO UPDATE SET reason = excluded.reason, at = excluded.at, address = excluded.address",
    [S_CONTACT_USABLE] = "DELETE FROM contact_channels WHERE contact_key = ?1 AND channel = ?2",
    [S_SUPPRESS] = "INSERT INTO suppressions (address, reason, at) VALUES (?1, ?2, ?3)"
                   " ON CONFLICT (address) DO UPDATE SET reason = ?2, at = ?3",
    [S_UNSUPPRESS] = "DELETE FROM suppressions WHERE address = ?1",
    [S_CUSTOMERS_OF_ADDRESS] = "SELECT DISTINCT customer_key FROM contacts"
                               " WHERE lower(email) = ?1 OR phone = ?1",
    [S_SCHEDULE_ADDRESS] = "UPDATE customers SET next_eval = ?2 WHERE next_eval > ?2 AND key IN"
                           " (SELECT customer_key FROM contacts WHERE lower(email) = ?1"
                           " OR phone = ?1)",
    [S_SUPPRESSION_LIST] = "SELECT address, reason, at FROM suppressions"
                           " ORDER BY at DESC, address LIMIT ?1",
    [S_EVENT_INSERT] = "INSERT INTO events (id, customer_key, type, at, data, received_at)"
                       " VALUES (?1, ?2, ?3, ?4, COALESCE(?5, '{}'), ?6)"
                       " ON CONFLICT (id) DO NOTHING",
    [S_SNAP_CONTACTS] =
        "SELECT c.key, c.id, c.roles, c.email, c.phone,"
        " (SELECT opted_in FROM consents WHERE contact_key = c.key AND kind = 'email'),"
        " (SELECT opted_in FROM consents WHERE contact_key = c.key AND kind = 'sms'),"
        " c.email <> '' AND EXISTS (SELECT 1 FROM suppressions WHERE address = lower(c.email)),"
        " c.phone <> '' AND EXISTS (SELECT 1 FROM suppressions WHERE address = c.phone)"
        " FROM contacts c WHERE c.customer_key = ?1 ORDER BY c.key",
    [S_SNAP_UNUSABLE] = "SELECT cc.contact_key, cc.channel FROM contact_channels cc"
                        " JOIN contacts c ON c.key = cc.contact_key WHERE c.customer_key = ?1"
                        " AND " UNUSABLE_HOLDS("c"),
    [S_SNAP_EVENTS] = "SELECT key, id, type, at FROM events WHERE customer_key = ?1"
                      " ORDER BY at, key",
    [S_SNAP_HISTORY] = "SELECT rule, purpose, channel, state, decided_at, updated_at,"
                       " trigger_key, content_id, maybe_delivered_at FROM touches"
                       " WHERE customer_key = ?1"
                       " ORDER BY decided_at, key",
    [S_TOUCH_INSERT] = "INSERT INTO touches (idempotency_key, customer_key, rule, purpose, channel,"
                       " contact_key, content_id, trigger_key, state, attempt, decided_at, due_at,"
                       " expires_at, updated_at, last_error)"
                       " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, ?10, ?10, ?11, ?10, ?12)"
                       " ON CONFLICT (idempotency_key) DO NOTHING",
    [S_TRACE_INSERT] = "INSERT INTO traces (customer_key, at, rule, verdict, reason, sentence,"
                       " channel, contact, content, until)"
                       " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    [S_TRACE_TRIM] = "DELETE FROM traces WHERE customer_key = ?1 AND key <= (SELECT key FROM"
                     " traces WHERE customer_key = ?1 ORDER BY key DESC LIMIT 1 OFFSET ?2)",
    [S_TRACE_LIST] = "SELECT t.at, t.rule, t.verdict, t.reason, t.sentence, t.channel,"
                     " t.contact, t.content, t.until FROM traces t JOIN customers c"
                     " ON c.key = t.customer_key WHERE c.id = ?1 ORDER BY t.key DESC LIMIT ?2",
    [S_COUNTER_ADD] = "INSERT INTO counters (name, value) VALUES (?1, ?2)"
                      " ON CONFLICT (name) DO UPDATE SET value = value + ?2",
    [S_ALERT_OPEN] =
        "INSERT INTO alerts (kind, customer_key, rule, detail, first_at, last_at, open)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?5, 1)"
        " ON CONFLICT (kind, customer_key, rule) WHERE open = 1"
        " DO UPDATE SET detail = ?4, last_at = ?5",
    [S_ALERT_CLOSE] = "UPDATE alerts SET open = 0, closed_at = ?2"
                      " WHERE customer_key = ?1 AND kind IN (?3, ?4, ?5) AND open = 1",
    [S_OUTBOX_EXPIRE] =
        "UPDATE touches INDEXED BY touches_pending_expiry SET state = 'dead', updated_at = ?1,"
        " last_error = 'expired before it could be sent'"
        " WHERE state IN ('queued', 'retry_wait') AND expires_at <= ?1 AND due_at <= ?1",
    [S_OUTBOX_DUE] = OUTBOX_COLUMNS OUTBOX_SEND_CHECKS
    " FROM touches t" OUTBOX_JOINS
    " WHERE t.state IN ('queued', 'retry_wait') AND t.due_at <= ?1 AND cu.paused = 0"
    " ORDER BY t.due_at, t.key LIMIT ?2",
    [S_OUTBOX_CLAIM_ONE] = "UPDATE touches SET state = 'in_flight', attempt = attempt + 1,"
                           " updated_at = ?2 WHERE key = ?1",
    [S_OUTBOX_DELIVERED] =
        "UPDATE touches SET state = 'delivered', provider_id = COALESCE(?2, ''),"
        " updated_at = ?3, last_error = '' WHERE key = ?1 AND state = 'in_flight'",
    [S_OUTBOX_RETRY] =
        "UPDATE touches SET state = 'retry_wait', due_at = ?2, last_error = COALESCE(?3, ''),"
        " updated_at = ?4 WHERE key = ?1 AND state = 'in_flight'",
    [S_OUTBOX_DEAD] = "UPDATE touches SET state = 'dead', last_error = COALESCE(?2, ''),"
                      " updated_at = ?3 WHERE key = ?1 AND state IN ('in_flight', 'queued',"
                      " 'retry_wait')",
    [S_OUTBOX_DEAD_UNSENT] =
        "UPDATE touches SET state = 'dead', last_error = COALESCE(?2, ''), updated_at = ?3,"
        " attempt = MAX(attempt - 1, 0) WHERE key = ?1 AND state = 'in_flight'",
    [S_OUTBOX_STATE] = "SELECT state, expires_at FROM touches WHERE key = ?1",
    [S_OUTBOX_REQUEUE] = "UPDATE touches SET state = 'queued', due_at = ?1, updated_at = ?1,"
                         " attempt = MAX(attempt - 1, 0),"
                         " maybe_delivered_at = MAX(maybe_delivered_at, updated_at)"
                         " WHERE state = 'in_flight'",
    [S_OUTBOX_MAYBE_DELIVERED] = "UPDATE touches SET maybe_delivered_at ="
                                 " MAX(maybe_delivered_at, ?2) WHERE key = ?1",
    [S_OUTBOX_NEXT_DUE] = "SELECT MIN(t.due_at) FROM touches t"
                          " JOIN customers cu ON cu.key = t.customer_key"
                          " WHERE t.state IN ('queued', 'retry_wait') AND cu.paused = 0",
    // clang-format off
    [S_OUTBOX_DUE_CHANNEL] = OUTBOX_CLAIM_FROM("touches_pending_due")
        " WHERE t.state IN ('queued', 'retry_wait') AND t.channel = ?3 AND t.due_at <= ?1"
        " AND cu.paused = 0 ORDER BY t.due_at, t.key LIMIT ?2",
    // clang-format on
    [S_OUTBOX_NEXT_DUE_CHANNEL] = "SELECT t.due_at FROM touches t INDEXED BY touches_pending_due"
                                  " JOIN customers cu ON cu.key = t.customer_key"
                                  " WHERE t.state IN ('queued', 'retry_wait') AND t.channel = ?1"
                                  " AND cu.paused = 0 ORDER BY t.due_at LIMIT 1",
    [S_OUTBOX_RELEASE] = "UPDATE touches SET state = 'queued', due_at = ?2, updated_at = ?2,"
                         " attempt = MAX(attempt - 1, 0) WHERE key = ?1 AND state = 'in_flight'",
    [S_OUTBOX_WITHDRAW] =
        "UPDATE touches SET state = 'cancelled', last_error = ?2, updated_at = ?3,"
        " attempt = MAX(attempt - 1, 0) WHERE key = ?1 AND state = 'in_flight'",
    [S_COUNT_CUSTOMERS] = "SELECT COUNT(*) FROM customers",
    [S_COUNT_CONTACTS] = "SELECT COUNT(*) FROM contacts",
    [S_COUNT_EVENTS] = "SELECT COUNT(*) FROM events",
    [S_COUNT_DECISIONS] = "SELECT COALESCE((SELECT value FROM counters WHERE name ="
                          " 'decisions'), 0)",
    [S_COUNT_OUTBOX] = "SELECT state, COUNT(*) FROM touches GROUP BY state",
    [S_COUNT_ALERTS] = "SELECT COUNT(*) FROM alerts WHERE open = 1",
    /* Index only (touches_state_due covers it): no row of the table is read. */
    [S_COUNT_BACKLOG] = "SELECT COUNT(*) FROM touches"
                        " WHERE state IN ('queued', 'retry_wait', 'in_flight')",
    [S_USER_VERSION] = "PRAGMA user_version",
    [S_CONTENT_RETIRE] = "UPDATE content SET in_library = 0, updated_at = ?1 WHERE in_library = 1",
    [S_CONTENT_UPSERT] =
        "INSERT INTO content (id, purpose, title, url, topics, stages, valid_from, valid_until,"
        " in_library, first_seen, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1, ?9, ?9)"
        " ON CONFLICT(id) DO UPDATE SET purpose = excluded.purpose, title = excluded.title,"
        " url = excluded.url, topics = excluded.topics, stages = excluded.stages,"
        " valid_from = excluded.valid_from, valid_until = excluded.valid_until, in_library = 1,"
        " updated_at = excluded.updated_at",
    [S_OUTBOX_LIST] = OUTBOX_SELECT " WHERE t.state <> 'dropped' AND (?1 IS NULL OR t.state = ?1)"
                                    " AND (?2 IS NULL OR cu.id = ?2)"
                                    " ORDER BY t.decided_at DESC, t.key DESC LIMIT ?3",
    [S_OUTBOX_CANCEL] = "UPDATE touches SET state = 'cancelled', updated_at = ?2,"
                        " last_error = 'cancelled by an operator'"
                        " WHERE key = ?1 AND state IN ('queued', 'retry_wait', 'dead')",
    [S_OUTBOX_REQUEUE_ONE] = "UPDATE touches SET state = 'queued', due_at = ?2, updated_at = ?2,"
                             " attempt = 0"
                             " WHERE key = ?1 AND (state IN ('dead', 'retry_wait')"
                             " OR (state = 'cancelled' AND last_error LIKE 'not sent:%'))"
                             " AND expires_at > ?2",
    /* The dead touches an operator sends again in bulk: of one channel
     * (NULL: any), one customer (0: any), dead since ?3; not past expiry. */
    [S_OUTBOX_REQUEUE_DEAD] =
        "UPDATE touches SET state = 'queued', due_at = ?4, updated_at = ?4, attempt = 0"
        " WHERE state = 'dead' AND (?1 IS NULL OR channel = ?1)"
        " AND (?2 = 0 OR customer_key = ?2) AND updated_at >= ?3 AND expires_at > ?4",
    [S_OUTBOX_RETRY_UNSENT] =
        "UPDATE touches SET state = 'retry_wait', due_at = ?2, last_error = COALESCE(?3, ''),"
        " updated_at = ?4, attempt = MAX(attempt - 1, 0) WHERE key = ?1 AND state = 'in_flight'",
    /* ?1 = now, ?2 = what the clock said before it stepped back. */
    [S_OUTBOX_CLOCK_BACK] =
        "UPDATE touches SET due_at = CASE WHEN due_at <= ?2 THEN ?1 ELSE due_at - (?2 - ?1) END"
        " WHERE due_at > ?1 AND (state = 'retry_wait' OR (state = 'queued' AND due_at <= ?2))",
    /* ?1 = now, ?2 = the step, ?3 = the marker of held rows. */
    [S_OUTBOX_CLOCK_FORWARD] =
        "UPDATE touches SET due_at = due_at + ?2 WHERE state = 'retry_wait' AND due_at > ?1 - ?2"
        " AND substr(last_error, 1, length(?3)) = ?3",
    [S_OUTBOX_HISTORY] = "SELECT at, state, attempt, detail FROM touch_transitions"
                         " WHERE touch_key = ?1 ORDER BY key",
    [S_OUTBOX_ONE] =
        OUTBOX_COLUMNS OUTBOX_SEND_CHECKS " FROM touches t" OUTBOX_JOINS " WHERE t.key = ?1",
    [S_OUTBOX_COUNT_DEAD] = "SELECT COUNT(*) FROM touches"
                            " WHERE state = 'dead' AND (?1 IS NULL OR channel = ?1)"
                            " AND (?2 = 0 OR customer_key = ?2) AND updated_at >= ?3",
    [S_COUNT_ALERT_KINDS] = "SELECT kind, COUNT(*) FROM alerts WHERE open = 1 GROUP BY kind",
    [S_COUNT_PAUSED] = "SELECT COUNT(*) FROM customers WHERE paused = 1",
    [S_CUSTOMER_SHOW] = "SELECT key, id, name, timezone, stage, segment, interests, attributes,"
                        " paused, created_at, updated_at, next_eval FROM customers WHERE id = ?1",
    [S_CONTACT_LIST] =
        "SELECT c.key, c.id, c.name, c.first_name, c.roles, c.email, c.phone,"
        " (SELECT opted_in FROM consents WHERE contact_key = c.key AND kind = 'email'),"
        " (SELECT opted_in FROM consents WHERE contact_key = c.key AND kind = 'sms'),"
        " COALESCE((SELECT group_concat(cc.channel) FROM contact_channels cc"
        " WHERE cc.contact_key = c.key AND " UNUSABLE_HOLDS(
            "c") "), '')"
                 " FROM contacts c WHERE c.customer_key = ?1 ORDER BY c.key",
    [S_ALERT_LIST] = "SELECT a.key, a.kind, cu.id, a.rule, a.detail, a.first_at, a.last_at,"
                     " a.closed_at, a.open FROM alerts a JOIN customers cu"
                     " ON cu.key = a.customer_key WHERE (?1 = 0 OR a.open = 1)"
                     " ORDER BY a.last_at DESC, a.key DESC LIMIT ?2",
    [S_REPORT] = "SELECT rule, purpose, CASE state WHEN 'delivered' THEN 'delivered'"
                 " WHEN 'dead' THEN 'failed' WHEN 'cancelled' THEN 'failed'"
                 " WHEN 'dropped' THEN 'dropped' ELSE 'pending' END AS outcome,"
                 " CASE state WHEN 'dropped' THEN last_error ELSE '' END AS why, COUNT(*)"
                 " FROM touches WHERE decided_at >= ?1 AND decided_at < ?2"
                 " GROUP BY rule, purpose, outcome, why ORDER BY rule, outcome, why",
    [S_CUSTOMER_LIST] = "SELECT key, id, name, timezone, stage, segment, interests, attributes,"
                        " paused, created_at, updated_at, next_eval FROM customers"
                        " WHERE (?1 IS NULL OR stage = ?1) AND (?2 IS NULL OR segment = ?2)"
                        " ORDER BY id LIMIT ?3",
    /* The pending verdict of the latest evaluation (its trace rows share `at`)
     * that opens soonest explains the next evaluation. */
    [S_CALENDAR] = "SELECT c.id, c.name, c.timezone, c.paused, c.next_eval, COALESCE(t.rule, ''),"
                   " COALESCE(t.verdict, ''), COALESCE(t.reason, ''), COALESCE(t.sentence, ''),"
                   " COALESCE(t.until, 0) FROM customers c LEFT JOIN traces t ON t.key ="
                   " (SELECT p.key FROM traces p WHERE p.customer_key = c.key"
                   " AND p.verdict IN ('wait', 'defer') AND p.at = (SELECT l.at FROM traces l"
                   " WHERE l.customer_key = c.key ORDER BY l.key DESC LIMIT 1)"
                   " ORDER BY p.until, p.key LIMIT 1)"
                   " WHERE c.next_eval < ?3 AND (?1 IS NULL OR c.id = ?1)"
                   " ORDER BY c.next_eval, c.key LIMIT ?2",
    [S_CALENDAR_RULE] =
        "SELECT c.id, c.name, c.timezone, c.paused, c.next_eval, t.rule, t.verdict, t.reason,"
        " t.sentence, t.until FROM traces t JOIN customers c ON c.key = t.customer_key"
        " WHERE t.rule = ?3 AND t.verdict IN ('wait', 'defer') AND (?1 IS NULL OR c.id = ?1)"
        " AND t.at = (SELECT l.at FROM traces l WHERE l.customer_key = t.customer_key"
        " ORDER BY l.key DESC LIMIT 1) ORDER BY t.until, c.key LIMIT ?2",
    [S_DUE_BETWEEN] = "SELECT key FROM customers WHERE next_eval BETWEEN ?1 AND ?2",
    [S_HOLDOUT] =
        "SELECT t.rule, CASE WHEN t.state = 'dropped' THEN 'held_out' ELSE 'treated' END AS grp,"
        " COUNT(DISTINCT t.customer_key),"
        " COUNT(DISTINCT CASE WHEN EXISTS (SELECT 1 FROM events e WHERE e.customer_key ="
        " t.customer_key AND e.type = 'churned' AND e.at >= t.decided_at) THEN t.customer_key END),"
        " COUNT(DISTINCT CASE WHEN EXISTS (SELECT 1 FROM events e WHERE e.customer_key ="
        " t.customer_key AND e.type = 'reactivated' AND e.at >= t.decided_at)"
        " THEN t.customer_key END)"
        " FROM touches t WHERE t.decided_at >= ?1 AND t.decided_at < ?2"
        " AND (t.state <> 'dropped' OR t.last_error = 'held_out')"
        " AND t.rule IN (SELECT rule FROM touches WHERE state = 'dropped'"
        " AND last_error = 'held_out' AND decided_at >= ?1 AND decided_at < ?2)"
        " GROUP BY t.rule, grp ORDER BY t.rule, grp",
    [S_TOUCH_COUNTS] = "SELECT state, CASE WHEN state = 'dropped' THEN '' ELSE channel END,"
                       " COUNT(*) FROM touches GROUP BY 1, 2 ORDER BY 1, 2",
    [S_CONTACT_OWNER] = "SELECT c.customer_key, cu.id FROM contacts c JOIN customers cu"
                        " ON cu.key = c.customer_key WHERE c.id = ?1",
    [S_DELIVERY_LATENCY] = "SELECT updated_at - decided_at FROM touches"
                           " WHERE state = 'delivered' AND due_at >= ?1 - 604800"
                           " AND updated_at >= ?1",
};

/* Outbox states as stored; "dropped" marks a final suppression (history only). */
static const char *const outbox_state_names[] = {
    "queued", "in_flight", "retry_wait", "delivered", "dead", "cancelled",
};
#define STATE_DROPPED "dropped"

const char *cad_outbox_state_name(enum cad_outbox_state s)
{
    return (unsigned)s < CAD_ARRAY_LEN(outbox_state_names) ? outbox_state_names[s] : "unknown";
}

static int outbox_state_parse(const char *name)
{
    for (unsigned i = 0; i < CAD_ARRAY_LEN(outbox_state_names); i++)
        if (strcmp(outbox_state_names[i], name) == 0)
            return (int)i;
    return -1;
}

/* A claimed touch with its strings copied out of SQLite. */
typedef struct claim_row {
    cad_outbox_touch_t touch;
    size_t off[OUTBOX_STRINGS]; /* offsets of the strings in claim_strings */
} claim_row_t;

struct cad_store {
    sqlite3 *db;
    sqlite3_stmt *stmt[S_COUNT];
    char *path;
    bool readonly;
    bool in_batch;
    uint64_t batch_serial;   /* batches begun since open */
    int64_t batch_decisions; /* decisions of the open batch, counted at its commit */
    bool no_traces;          /* the simulator's copy: decisions without traces and alerts */
    bool light;              /* the current write runs in the batch without a savepoint */
    int depth;               /* nesting of write scopes within one call */
    claim_row_t *claim_rows;
    int claim_cap;
    char *claim_strings;
    size_t claim_len, claim_cap_strings;
    cad_store_checkpoint_t *checkpoint; /* NULL: SQLite checkpoints inside commits */
    /* Customers that may have an open alert: one bit per customer key, read
     * from the alerts table at open and set whenever a decision opens an
     * alert, never cleared while the store is open. A decision of a
     * customer whose bit is clear skips the statement that closes alerts
     * (as costly as queueing the touch). `alerts_unknown`: every customer
     * may have one (a key too large for the bitmap, or no memory for it). */
    uint64_t *alert_marks;
    size_t alert_words;
    bool alerts_unknown;
};

#define ALERT_MARKS_MAX_KEY ((int64_t)1 << 32) /* beyond it: alerts_unknown (512 MiB of bits) */

/* ---- helpers ------------------------------------------------------------ */

/* Maps a SQLite result to a CAD_E* code: disk full and I/O errors are told
 * apart from the rest so the operator knows what to fix. */
static int sqlite_code(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_FULL: return CAD_EFULL;
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN: return CAD_EIO;
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return CAD_EBUSY;
    case SQLITE_NOMEM: return CAD_ENOMEM;
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_AUTH: return CAD_EPERM;
    case SQLITE_CONSTRAINT: return CAD_EINVAL;
    default: return CAD_ESTORE;
    }
}

static int db_fail(cad_store_t *st, char *err, int rc, const char *what)
{
    return cad_fail(err, sqlite_code(rc), "store %s: %s: %s", st->path, what,
                    st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc));
}

/* Records that customer `key` may have an open alert. */
static void alert_mark(cad_store_t *st, int64_t key)
{
    if (st->alerts_unknown)
        return;
    if (key < 0 || key >= ALERT_MARKS_MAX_KEY) {
        st->alerts_unknown = true;
        return;
    }
    size_t word = (size_t)key / 64;
    if (word >= st->alert_words) {
        size_t n = st->alert_words ? st->alert_words : 1024;
        while (n <= word)
            n *= 2;
        uint64_t *p = realloc(st->alert_marks, n * sizeof *p);
        if (!p) {
            st->alerts_unknown = true;
            return;
        }
        memset(p + st->alert_words, 0, (n - st->alert_words) * sizeof *p);
        st->alert_marks = p;
        st->alert_words = n;
    }
    st->alert_marks[word] |= (uint64_t)1 << (key % 64);
}

static bool alert_may_be_open(const cad_store_t *st, int64_t key)
{
    if (st->alerts_unknown)
        return true;
    if (key < 0)
        return false;
    size_t word = (size_t)key / 64;
    return word < st->alert_words && (st->alert_marks[word] >> (key % 64) & 1);
}

/* Marks every customer with an open alert in the store. */
static int alert_marks_load(cad_store_t *st, char *err)
{
    sqlite3_stmt *s;
    int rc =
        sqlite3_prepare_v2(st->db, "SELECT customer_key FROM alerts WHERE open = 1", -1, &s, NULL);
    if (rc != SQLITE_OK)
        return db_fail(st, err, rc, "reading open alerts");
    while ((rc = sqlite3_step(s)) == SQLITE_ROW)
        alert_mark(st, sqlite3_column_int64(s, 0));
    sqlite3_finalize(s);
    return rc == SQLITE_DONE ? 0 : db_fail(st, err, rc, "reading open alerts");
}

static sqlite3_stmt *stmt(cad_store_t *st, enum stmt_id id)
{
    sqlite3_stmt *s = st->stmt[id];
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return s;
}

static void bind_text(sqlite3_stmt *s, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(s, i, v, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(s, i);
}

static const char *col_text(sqlite3_stmt *s, int i)
{
    const unsigned char *t = sqlite3_column_text(s, i);
    return t ? (const char *)t : "";
}

/* Runs a statement that returns no rows; resets it. */
static int exec_stmt(cad_store_t *st, sqlite3_stmt *s, char *err, const char *what)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        return db_fail(st, err, rc, what);
    return 0;
}

/* Write scopes: outside a batch, a transaction; inside, a savepoint. */
static int write_scope(cad_store_t *st, bool light, char *err)
{
    if (st->readonly)
        return cad_fail(err, CAD_EPERM, "store %s: opened read-only, cannot write", st->path);
    if (st->depth++ > 0)
        return 0;
    st->light = light && st->in_batch;
    if (st->light)
        return 0;
    int r = exec_stmt(st, stmt(st, st->in_batch ? S_SAVEPOINT : S_BEGIN), err, "begin write");
    if (r < 0)
        st->depth = 0;
    return r;
}

static int write_begin(cad_store_t *st, char *err)
{
    return write_scope(st, false, err);
}

/* For the hot import paths (one customer, one event): inside a batch no
 * savepoint is taken, because the only statement that can refuse a row runs
 * first and writes nothing when it does. A store failure (disk full, I/O)
 * then rolls the whole batch back instead of this write alone. */
static int write_begin_light(cad_store_t *st, char *err)
{
    return write_scope(st, true, err);
}

static bool is_refusal(int result)
{
    return result == -CAD_EINVAL || result == -CAD_EEXIST || result == -CAD_ENOTFOUND;
}

static int write_end(cad_store_t *st, int result, char *err)
{
    if (--st->depth > 0)
        return result;
    if (st->light) {
        st->light = false;
        if (result >= 0 || is_refusal(result))
            return result;
        if (!sqlite3_get_autocommit(st->db)) {
            sqlite3_step(stmt(st, S_ROLLBACK));
            sqlite3_reset(st->stmt[S_ROLLBACK]);
        }
        st->in_batch = false;
        return result;
    }
    if (result >= 0) {
        int r = exec_stmt(st, stmt(st, st->in_batch ? S_RELEASE : S_COMMIT), err, "commit");
        if (r == 0)
            return result;
        result = r;
    }
    /* Undo everything this call wrote. SQLite may already have rolled back
     * (disk full during commit); then only a batch's own state is left. */
    if (st->in_batch) {
        if (!sqlite3_get_autocommit(st->db)) {
            sqlite3_step(stmt(st, S_ROLLBACK_TO));
            sqlite3_reset(st->stmt[S_ROLLBACK_TO]);
            sqlite3_step(stmt(st, S_RELEASE));
            sqlite3_reset(st->stmt[S_RELEASE]);
        } else {
            st->in_batch = false; /* the whole batch was rolled back by SQLite */
        }
    } else if (!sqlite3_get_autocommit(st->db)) {
        sqlite3_step(stmt(st, S_ROLLBACK));
        sqlite3_reset(st->stmt[S_ROLLBACK]);
    }
    return result;
}

static bool valid_utf8(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int n;
        if (*p < 0x80)
            n = 0;
        else if ((*p & 0xe0) == 0xc0 && *p >= 0xc2)
            n = 1;
        else if ((*p & 0xf0) == 0xe0)
            n = 2;
        else if ((*p & 0xf8) == 0xf0 && *p <= 0xf4)
            n = 3;
        else
            return false;
        p++;
        for (int i = 0; i < n; i++, p++)
            if ((*p & 0xc0) != 0x80)
                return false;
    }
    return true;
}

/* How many of the first `max` bytes of s to quote in a message without
 * cutting a UTF-8 character (a cut one makes the message invalid UTF-8,
 * which a JSON reply cannot carry). */
static int utf8_prefix(const char *s, int max)
{
    int n = 0;
    while (n < max && s[n])
        n++;
    if (s[n]) /* cut: step back to the start of a character */
        while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
            n--;
    return n;
}

static int check_id(const char *id, const char *what, char *err)
{
    if (!id || !*id)
        return cad_fail(err, CAD_EINVAL, "%s: id is required", what);
    if (!valid_utf8(id))
        return cad_fail(err, CAD_EINVAL, "%s: id is not valid UTF-8", what);
    if (strlen(id) > CAD_ID_MAX)
        return cad_fail(err, CAD_EINVAL, "%s '%.*s...': id longer than %d bytes", what,
                        utf8_prefix(id, 40), id, CAD_ID_MAX);
    for (const char *p = id; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return cad_fail(err, CAD_EINVAL, "%s: id contains a control character", what);
    return 0;
}

static bool has_ctl(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    return false;
}

/* A human name: UTF-8 without control characters, at most 1 KiB. */
static int check_text(const char *text, const char *what, const char *id, const char *field,
                      char *err)
{
    if (text && (strlen(text) > 1024 || has_ctl(text) || !valid_utf8(text)))
        return cad_fail(err, CAD_EINVAL,
                        "%s %s: field %s: must be UTF-8 text without control characters,"
                        " at most 1024 bytes",
                        what, id, field);
    return 0;
}

static bool email_valid(const char *email)
{
    const char *at = strchr(email, '@');
    return at && at != email && at[1] && !strchr(at + 1, '@') && !strpbrk(email, " \t<>,;") &&
           !has_ctl(email) && strlen(email) <= 254;
}

/* E.164: + then 7 to 15 digits, the first not 0. */
static bool phone_valid(const char *phone)
{
    size_t n = strlen(phone);
    bool ok = phone[0] == '+' && n >= 8 && n <= 16 && phone[1] != '0';
    for (size_t i = 1; ok && i < n; i++)
        ok = isdigit((unsigned char)phone[i]);
    return ok;
}

static int check_email(const char *email, const char *contact, char *err)
{
    if (!email || !*email || email_valid(email))
        return 0;
    return cad_fail(err, CAD_EINVAL, "contact %s: field email: '%s' is not an email address",
                    contact, email);
}

static int check_phone(const char *phone, const char *contact, char *err)
{
    if (!phone || !*phone || phone_valid(phone))
        return 0;
    return cad_fail(err, CAD_EINVAL,
                    "contact %s: field phone: '%s' is not an E.164 number (+ and 7-15 digits)",
                    contact, phone);
}

static cad_time_t wall_now(void)
{
    return (cad_time_t)time(NULL);
}

/* ---- opening ------------------------------------------------------------ */

static int read_user_version(cad_store_t *st, int *version, char *err)
{
    sqlite3_stmt *s;
    int rc = sqlite3_prepare_v2(st->db, "PRAGMA user_version", -1, &s, NULL);
    if (rc != SQLITE_OK)
        return db_fail(st, err, rc, "reading the schema version");
    rc = sqlite3_step(s);
    *version = rc == SQLITE_ROW ? sqlite3_column_int(s, 0) : 0;
    sqlite3_finalize(s);
    if (rc != SQLITE_ROW)
        return db_fail(st, err, rc, "reading the schema version");
    return 0;
}

static int exec_sql(cad_store_t *st, const char *sql, char *err, const char *what)
{
    char *msg = NULL;
    int rc = sqlite3_exec(st->db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        int r = cad_fail(err, sqlite_code(rc), "store %s: %s: %s", st->path, what,
                         msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        return r;
    }
    return 0;
}

/* Applies every migration step above the database's version, one
 * transaction per step. */
static int migrate(cad_store_t *st, char *err)
{
    int version;
    int r = read_user_version(st, &version, err);
    if (r < 0)
        return r;
    int target = cad_store_schema_version();
    if (version > target)
        return cad_fail(err, CAD_ESTORE,
                        "store %s: schema version %d is newer than this build's %d;"
                        " upgrade cadenced",
                        st->path, version, target);
    for (int v = version + 1; v <= target; v++) {
        char what[64], pragma[48];
        snprintf(what, sizeof(what), "migrating the schema to version %d", v);
        snprintf(pragma, sizeof(pragma), "PRAGMA user_version = %d", v);
        if ((r = exec_sql(st, "BEGIN IMMEDIATE", err, what)) < 0)
            return r;
        if ((r = exec_sql(st, migrations[v - 1], err, what)) < 0 ||
            (r = exec_sql(st, pragma, err, what)) < 0 ||
            (r = exec_sql(st, "COMMIT", err, what)) < 0) {
            sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
            return r;
        }
    }
    return 0;
}

/* Copies the database file at st->path into st's in-memory connection. */
static int copy_into_memory(cad_store_t *st, char *err)
{
    sqlite3 *src = NULL;
    int rc = sqlite3_open_v2(st->path, &src, SQLITE_OPEN_READONLY, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(src, BUSY_TIMEOUT_MS);
        sqlite3_backup *b = sqlite3_backup_init(st->db, "main", src, "main");
        if (!b) {
            rc = sqlite3_errcode(st->db);
        } else {
            rc = sqlite3_backup_step(b, -1);
            int done = sqlite3_backup_finish(b);
            rc = rc == SQLITE_DONE ? done : rc;
        }
    }
    int r = 0;
    if (rc != SQLITE_OK)
        r = cad_fail(err, sqlite_code(rc), "store %s: cannot copy the database: %s", st->path,
                     src ? sqlite3_errmsg(src) : sqlite3_errstr(rc));
    sqlite3_close(src);
    return r;
}

enum open_mode { OPEN_READWRITE, OPEN_READONLY, OPEN_COPY };

/* WAL size, in pages, past which a commit asks for a checkpoint (SQLite's
 * own automatic threshold). */
#define CHECKPOINT_PAGES 1000
/* WAL size past which the committing thread checkpoints as well. */
#define CHECKPOINT_INLINE_PAGES (16 * CHECKPOINT_PAGES)

/* Called by SQLite after every commit of the main connection with the WAL's
 * size in pages.
 *
 * The WAL starts over from its beginning only when a write begins after a
 * checkpoint that copied every frame. A thread chasing a writer that keeps
 * committing rarely gets there (new frames arrive while it copies), so
 * under a long burst of writes the WAL would keep growing. Past
 * CHECKPOINT_INLINE_PAGES the committing thread runs the (PASSIVE)
 * checkpoint itself, between two of its own writes, where nothing can
 * arrive behind it: the copy completes and the next write restarts the
 * WAL. Most of the frames are copied already by then, so the stall is
 * short. */
static int on_wal_commit(void *arg, sqlite3 *db, const char *name, int pages)
{
    cad_store_t *st = arg;
    if (pages >= CHECKPOINT_INLINE_PAGES) {
        int log_frames = 0, checkpointed = 0;
        int rc = sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, &log_frames,
                                           &checkpointed);
        cad_store_checkpoint_record_commit(st->checkpoint, rc, log_frames, checkpointed);
    } else if (pages >= CHECKPOINT_PAGES)
        cad_store_checkpoint_request(st->checkpoint);
    return SQLITE_OK;
}

/* Moves WAL checkpoints off the committing thread (store_checkpoint.h).
 * When the thread cannot start, SQLite's automatic checkpoint stays on. */
static void start_checkpoint_thread(cad_store_t *st, enum cad_store_sync sync)
{
    char err[CAD_ERRBUF];
    if (cad_store_checkpoint_start(st->path, sync == CAD_SYNC_FULL, &st->checkpoint, err) < 0) {
        cad_log_warning("%s; checkpoints stay inside commits", err);
        return;
    }
    sqlite3_wal_hook(st->db, on_wal_commit, st); /* replaces the automatic checkpoint */
}

/* Process-wide SQLite settings, before SQLite initialises itself: no
 * memory statistics (nothing reads them, and keeping them takes a global
 * mutex around every allocation SQLite makes). When something else in the
 * process initialised SQLite first, sqlite3_config refuses and SQLite's
 * defaults stay. */
static void sqlite_setup(void)
{
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

static int open_common(const char *path, enum open_mode mode, enum cad_store_sync sync,
                       cad_store_t **out, char *err)
{
    static uv_once_t setup = UV_ONCE_INIT;
    uv_once(&setup, sqlite_setup);
    bool readonly = mode == OPEN_READONLY;
    /* One connection, used from the loop thread only: no SQLite mutexes. */
    int flags =
        SQLITE_OPEN_NOMUTEX |
        (mode == OPEN_READONLY ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    *out = NULL;
    if (!path || !*path)
        return cad_fail(err, CAD_EINVAL, "store: no database path given");
    cad_store_t *st = calloc(1, sizeof(*st));
    if (!st || !(st->path = strdup(path))) {
        free(st);
        return cad_fail(err, CAD_ENOMEM, "store %s: out of memory", path);
    }
    st->readonly = readonly;
    int rc = sqlite3_open_v2(mode == OPEN_COPY ? ":memory:" : path, &st->db, flags, NULL);
    int r;
    if (rc != SQLITE_OK) {
        r = db_fail(st, err, rc, "cannot open the database");
        goto fail;
    }
    if (mode == OPEN_COPY && (r = copy_into_memory(st, err)) < 0)
        goto fail;
    sqlite3_extended_result_codes(st->db, 1);
    sqlite3_busy_timeout(st->db, BUSY_TIMEOUT_MS);
    if ((r = exec_sql(st, "PRAGMA foreign_keys = ON", err, "enabling foreign keys")) < 0)
        goto fail;
    /* A page cache big enough for the indexes of ~1M events: imports and
     * snapshot loads stay in memory instead of re-reading pages. */
    if ((r = exec_sql(st, "PRAGMA cache_size = -65536", err, "sizing the page cache")) < 0)
        goto fail;
    /* The per-write savepoints of a batch journal into memory, not a temp file. */
    if ((r = exec_sql(st, "PRAGMA temp_store = MEMORY", err, "setting temp_store")) < 0)
        goto fail;
    if (!readonly) {
        /* journal_mode returns a row; sqlite3_exec ignores it. */
        if (mode == OPEN_READWRITE &&
            (r = exec_sql(st, "PRAGMA journal_mode = WAL", err, "enabling WAL")) < 0)
            goto fail;
        if ((r = exec_sql(st,
                          sync == CAD_SYNC_NORMAL ? "PRAGMA synchronous = NORMAL"
                                                  : "PRAGMA synchronous = FULL",
                          err, "setting the synchronous level")) < 0)
            goto fail;
        if ((r = migrate(st, err)) < 0)
            goto fail;
        if (mode == OPEN_READWRITE)
            start_checkpoint_thread(st, sync);
    } else {
        int version;
        if ((r = read_user_version(st, &version, err)) < 0)
            goto fail;
        if (version != cad_store_schema_version()) {
            r = cad_fail(err, CAD_ESTORE,
                         "store %s: schema version %d, this build reads %d; open it once"
                         " read-write (start cadenced) to migrate",
                         path, version, cad_store_schema_version());
            goto fail;
        }
    }
    for (int i = 0; i < S_COUNT; i++) {
        rc = sqlite3_prepare_v3(st->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &st->stmt[i],
                                NULL);
        if (rc != SQLITE_OK) {
            r = db_fail(st, err, rc, "preparing statements");
            goto fail;
        }
    }
    if (!readonly && (r = alert_marks_load(st, err)) < 0)
        goto fail;
    *out = st;
    return 0;
fail:
    cad_store_close(st);
    return r;
}

int cad_store_open(const char *path, enum cad_store_sync sync, cad_store_t **out, char *err)
{
    return open_common(path, OPEN_READWRITE, sync, out, err);
}

int cad_store_open_readonly(const char *path, cad_store_t **out, char *err)
{
    return open_common(path, OPEN_READONLY, CAD_SYNC_FULL, out, err);
}

int cad_store_open_copy(const char *path, cad_store_t **out, char *err)
{
    return open_common(path, OPEN_COPY, CAD_SYNC_NORMAL, out, err);
}

void cad_store_close(cad_store_t *st)
{
    if (!st)
        return;
    if (st->in_batch) {
        char err[CAD_ERRBUF];
        cad_store_batch_commit(st, err);
    }
    /* The checkpoint thread goes first: the main connection, closed last,
     * then copies what is left and removes the WAL. */
    if (st->checkpoint) {
        sqlite3_wal_hook(st->db, NULL, NULL);
        cad_store_checkpoint_stop(st->checkpoint);
        st->checkpoint = NULL;
    }
    for (int i = 0; i < S_COUNT; i++)
        sqlite3_finalize(st->stmt[i]);
    sqlite3_close(st->db);
    free(st->claim_rows);
    free(st->claim_strings);
    free(st->alert_marks);
    free(st->path);
    free(st);
}

void cad_store_checkpoint_counts(cad_store_t *st, cad_store_checkpoint_stats_t *out)
{
    memset(out, 0, sizeof *out);
    if (st && st->checkpoint)
        cad_store_checkpoint_get_stats(st->checkpoint, out);
}

/* Appends the names of the set bits of `mask` to buf as "a,b,c". */
static void join_names(char *buf, size_t size, uint64_t mask, int n,
                       const char *(*name)(const void *table, int i), const void *table)
{
    size_t len = 0;
    buf[0] = '\0';
    for (int i = 0; i < n && len < size; i++)
        if (mask & (UINT64_C(1) << i))
            len += (size_t)snprintf(buf + len, size - len, "%s%s", len ? "," : "", name(table, i));
}

static const char *topic_name(const void *table, int i)
{
    return ((const cad_playbook_t *)table)->topics[i];
}

static const char *stage_name_at(const void *table, int i)
{
    (void)table;
    return cad_stage_name((enum cad_stage)i);
}

int cad_store_content_sync(cad_store_t *st, const cad_playbook_t *pb, cad_time_t now, char *err)
{
    int r = write_begin(st, err);
    if (r < 0)
        return r;
    sqlite3_stmt *s = stmt(st, S_CONTENT_RETIRE);
    sqlite3_bind_int64(s, 1, now);
    r = exec_stmt(st, s, err, "retiring content items");
    char topics[1024], stages[128];
    for (int i = 0; r == 0 && i < pb->n_content; i++) {
        const cad_content_t *c = &pb->content[i];
        join_names(topics, sizeof(topics), c->topics, pb->n_topics, topic_name, pb);
        join_names(stages, sizeof(stages), c->stages, CAD_STAGE_COUNT, stage_name_at, NULL);
        s = stmt(st, S_CONTENT_UPSERT);
        bind_text(s, 1, c->id);
        bind_text(s, 2, cad_purpose_name(c->purpose));
        bind_text(s, 3, c->title ? c->title : "");
        bind_text(s, 4, c->url ? c->url : "");
        bind_text(s, 5, topics);
        bind_text(s, 6, stages);
        sqlite3_bind_int64(s, 7, c->valid_from);
        sqlite3_bind_int64(s, 8, c->valid_until == CAD_TIME_NEVER ? 0 : c->valid_until);
        sqlite3_bind_int64(s, 9, now);
        r = exec_stmt(st, s, err, "recording a content item");
    }
    return write_end(st, r, err);
}

void cad_store_set_traces(cad_store_t *st, bool on)
{
    st->no_traces = !on;
}

void cad_store_set_busy_timeout(cad_store_t *st, int ms)
{
    sqlite3_busy_timeout(st->db, ms > 0 ? ms : 0);
}

int cad_store_limit_size(cad_store_t *st, int64_t max_bytes, char *err)
{
    if (max_bytes < 0)
        return cad_fail(err, CAD_EINVAL, "store %s: size limit must not be negative", st->path);
    char sql[96];
    /* 4294967294 pages is SQLite's own ceiling: "no cap". */
    snprintf(sql, sizeof(sql), "PRAGMA max_page_count = %lld",
             max_bytes ? (long long)(max_bytes / 4096 > 0 ? max_bytes / 4096 : 1) : 4294967294LL);
    return exec_sql(st, sql, err, "setting the size limit");
}

int cad_store_user_version(cad_store_t *st)
{
    sqlite3_stmt *s = stmt(st, S_USER_VERSION);
    int version = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int(s, 0) : -1;
    sqlite3_reset(s);
    return version;
}

const char *cad_store_path(const cad_store_t *st)
{
    return st->path;
}

/* ---- batches ------------------------------------------------------------ */

/* Adds n to the running count of decisions. */
static int count_decisions(cad_store_t *st, int64_t n, char *err)
{
    sqlite3_stmt *s = stmt(st, S_COUNTER_ADD);
    bind_text(s, 1, "decisions");
    sqlite3_bind_int64(s, 2, n);
    return exec_stmt(st, s, err, "counting decisions");
}

int cad_store_batch_begin(cad_store_t *st, char *err)
{
    if (st->in_batch)
        return cad_fail(err, CAD_EBUSY, "store %s: a batch is already open", st->path);
    if (st->readonly)
        return cad_fail(err, CAD_EPERM, "store %s: opened read-only, cannot write", st->path);
    int r = exec_stmt(st, stmt(st, S_BEGIN), err, "beginning a batch");
    if (r == 0) {
        st->in_batch = true;
        st->batch_serial++;
    }
    st->batch_decisions = 0;
    return r;
}

int cad_store_batch_commit(cad_store_t *st, char *err)
{
    if (!st->in_batch)
        return cad_fail(err, CAD_EINVAL, "store %s: no batch is open", st->path);
    int r = 0;
    if (st->batch_decisions > 0)
        r = count_decisions(st, st->batch_decisions, err);
    st->batch_decisions = 0;
    st->in_batch = false;
    if (r == 0)
        r = exec_stmt(st, stmt(st, S_COMMIT), err, "committing a batch");
    if (r < 0 && !sqlite3_get_autocommit(st->db)) {
        sqlite3_step(stmt(st, S_ROLLBACK));
        sqlite3_reset(st->stmt[S_ROLLBACK]);
    }
    return r;
}

void cad_store_batch_rollback(cad_store_t *st)
{
    if (!st->in_batch)
        return;
    st->in_batch = false;
    if (!sqlite3_get_autocommit(st->db)) {
        sqlite3_step(stmt(st, S_ROLLBACK));
        sqlite3_reset(st->stmt[S_ROLLBACK]);
    }
}

bool cad_store_in_batch(const cad_store_t *st)
{
    return st->in_batch;
}

uint64_t cad_store_batch_serial(const cad_store_t *st)
{
    return st->batch_serial;
}

int64_t cad_store_changes(const cad_store_t *st)
{
    return (int64_t)sqlite3_total_changes64(st->db);
}

/* ---- customers, contacts, events ---------------------------------------- */

static int lookup_customer(cad_store_t *st, const char *id, int64_t *key, char *err)
{
    sqlite3_stmt *s = stmt(st, S_CUSTOMER_KEY);
    bind_text(s, 1, id);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        *key = sqlite3_column_int64(s, 0);
        sqlite3_reset(s);
        return 0;
    }
    sqlite3_reset(s);
    if (rc == SQLITE_DONE)
        return cad_fail(err, CAD_ENOTFOUND, "customer '%s' does not exist", id);
    return db_fail(st, err, rc, "looking up a customer");
}

int cad_store_customer_key(cad_store_t *st, const char *customer_id, int64_t *key, char *err)
{
    int r = check_id(customer_id, "customer", err);
    return r < 0 ? r : lookup_customer(st, customer_id, key, err);
}

/* Normalises "a, b;c" into "a,b,c" (tags and roles); false if too long. */
static bool normalise_list(const char *in, char *out, size_t size)
{
    size_t n = 0;
    const char *p = in;
    while (*p) {
        while (*p == ' ' || *p == ',' || *p == ';' || *p == '\t')
            p++;
        const char *start = p;
        while (*p && *p != ',' && *p != ';')
            p++;
        const char *end = p;
        while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        if (end == start)
            continue;
        size_t len = (size_t)(end - start);
        if (n + len + 2 > size)
            return false;
        if (n)
            out[n++] = ',';
        memcpy(out + n, start, len);
        n += len;
    }
    out[n] = '\0';
    return true;
}

int cad_store_customer_upsert(cad_store_t *st, const cad_customer_input_t *in, cad_time_t now,
                              int64_t *key, char *err)
{
    int r = check_id(in->id, "customer", err);
    if (r < 0)
        return r;
    if (in->stage && cad_stage_parse(in->stage) < 0)
        return cad_fail(err, CAD_EINVAL,
                        "customer %s: field stage: unknown stage '%s' (prospect, onboarding,"
                        " active, at_risk, former)",
                        in->id, in->stage);
    if (in->timezone && !cad_tz_valid(in->timezone))
        return cad_fail(err, CAD_EINVAL, "customer %s: field timezone: unknown time zone '%s'",
                        in->id, in->timezone);
    if (in->segment && (!*in->segment || strlen(in->segment) >= CAD_NAME_MAX))
        return cad_fail(err, CAD_EINVAL, "customer %s: field segment: must be 1-%d bytes", in->id,
                        CAD_NAME_MAX - 1);
    if ((r = check_text(in->name, "customer", in->id, "name", err)) < 0)
        return r;
    char interests[4096];
    if (in->interests && !normalise_list(in->interests, interests, sizeof(interests)))
        return cad_fail(err, CAD_EINVAL, "customer %s: field interests: longer than %zu bytes",
                        in->id, sizeof(interests) - 1);
    if (in->attributes) {
        json_error_t jerr;
        json_t *j = json_loads(in->attributes, JSON_REJECT_DUPLICATES, &jerr);
        bool ok = j && json_is_object(j);
        json_decref(j);
        if (!ok)
            return cad_fail(err, CAD_EINVAL, "customer %s: field attributes: not a JSON object%s%s",
                            in->id, j ? "" : ": ", j ? "" : jerr.text);
    }
    if (in->created_at < 0)
        return cad_fail(err, CAD_EINVAL, "customer %s: field created_at: before 1970", in->id);
    if ((r = write_begin_light(st, err)) < 0)
        return r;
    sqlite3_stmt *s = stmt(st, S_CUSTOMER_UPSERT);
    bind_text(s, 1, in->id);
    bind_text(s, 2, in->name);
    bind_text(s, 3, in->timezone);
    bind_text(s, 4, in->stage);
    bind_text(s, 5, in->segment);
    bind_text(s, 6, in->interests ? interests : NULL);
    bind_text(s, 7, in->attributes);
    sqlite3_bind_int64(s, 8, in->created_at);
    sqlite3_bind_int64(s, 9, now);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        if (key)
            *key = sqlite3_column_int64(s, 0);
        rc = sqlite3_step(s);
    }
    sqlite3_reset(s);
    r = rc == SQLITE_DONE ? 0 : db_fail(st, err, rc, "saving a customer");
    return write_end(st, r, err);
}

static int consent_write(cad_store_t *st, int64_t contact_key, const char *contact_id,
                         const cad_consent_input_t *c, cad_time_t now, char *err)
{
    if (!c->kind || (strcmp(c->kind, "email") != 0 && strcmp(c->kind, "sms") != 0))
        return cad_fail(err, CAD_EINVAL, "contact %s: consent kind '%s' is not email or sms",
                        contact_id, c->kind ? c->kind : "(none)");
    if (c->at < 0)
        return cad_fail(err, CAD_EINVAL, "contact %s: consent %s: time before 1970", contact_id,
                        c->kind);
    sqlite3_stmt *s = stmt(st, S_CONSENT_UPSERT);
    sqlite3_bind_int64(s, 1, contact_key);
    bind_text(s, 2, c->kind);
    sqlite3_bind_int(s, 3, c->opted_in ? 1 : 0);
    sqlite3_bind_int64(s, 4, c->at ? c->at : now);
    bind_text(s, 5, c->source);
    return exec_stmt(st, s, err, "saving a consent");
}
/* Inside an open write: customer `customer_key` is evaluated no later than
 * `now` (its data changed). */
static int schedule_customer(cad_store_t *st, int64_t customer_key, cad_time_t now, char *err)
{
    sqlite3_stmt *u = stmt(st, S_CUSTOMER_TOUCH_EVAL);
    sqlite3_bind_int64(u, 1, customer_key);
    sqlite3_bind_int64(u, 2, now);
    return exec_stmt(st, u, err, "scheduling a customer");
}

int cad_store_contact_upsert(cad_store_t *st, const cad_contact_input_t *in, cad_time_t now,
                             char *err)
{
    int r = check_id(in->id, "contact", err);
    if (r < 0)
        return r;
    if (!in->customer_id || !*in->customer_id)
        return cad_fail(err, CAD_EINVAL, "contact %s: field customer is required", in->id);
    if ((r = check_email(in->email, in->id, err)) < 0 ||
        (r = check_phone(in->phone, in->id, err)) < 0 ||
        (r = check_text(in->name, "contact", in->id, "name", err)) < 0 ||
        (r = check_text(in->first_name, "contact", in->id, "first_name", err)) < 0)
        return r;
    char roles[1024];
    if (in->roles && !normalise_list(in->roles, roles, sizeof(roles)))
        return cad_fail(err, CAD_EINVAL, "contact %s: field roles: longer than %zu bytes", in->id,
                        sizeof(roles) - 1);
    for (int i = 0; i < 2; i++)
        if (in->consent[i].kind && strcmp(in->consent[i].kind, "email") != 0 &&
            strcmp(in->consent[i].kind, "sms") != 0)
            return cad_fail(err, CAD_EINVAL, "contact %s: consent kind '%s' is not email or sms",
                            in->id, in->consent[i].kind);
    /* Addresses are kept lower-case (email) so suppressions match. */
    char email[256];
    if (in->email) {
        size_t n = strlen(in->email);
        for (size_t i = 0; i <= n; i++)
            email[i] = (char)tolower((unsigned char)in->email[i]);
    }
    int64_t customer_key;
    if ((r = lookup_customer(st, in->customer_id, &customer_key, err)) < 0)
        return r == -CAD_ENOTFOUND
                   ? cad_fail(err, CAD_ENOTFOUND,
                              "contact %s: field customer: customer '%s' does not exist", in->id,
                              in->customer_id)
                   : r;
    if ((r = write_begin(st, err)) < 0)
        return r;
    sqlite3_stmt *s = stmt(st, S_CONTACT_UPSERT);
    bind_text(s, 1, in->id);
    sqlite3_bind_int64(s, 2, customer_key);
    bind_text(s, 3, in->name);
    bind_text(s, 4, in->first_name);
    bind_text(s, 5, in->roles ? roles : NULL);
    bind_text(s, 6, in->email ? email : NULL);
    bind_text(s, 7, in->phone);
    int64_t contact_key = 0;
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        contact_key = sqlite3_column_int64(s, 0);
        rc = sqlite3_step(s);
    }
    sqlite3_reset(s);
    r = rc == SQLITE_DONE ? 0 : db_fail(st, err, rc, "saving a contact");
    for (int i = 0; r == 0 && i < 2; i++)
        if (in->consent[i].kind)
            r = consent_write(st, contact_key, in->id, &in->consent[i], now, err);
    if (r == 0)
        r = schedule_customer(st, customer_key, now, err);
    return write_end(st, r, err);
}

/* The keys of contact `contact_id` and of its customer. */
static int contact_lookup(cad_store_t *st, const char *contact_id, int64_t *contact_key,
                          int64_t *customer_key, char *err)
{
    int r = check_id(contact_id, "contact", err);
    if (r < 0)
        return r;
    sqlite3_stmt *s = stmt(st, S_CONTACT_KEY);
    bind_text(s, 1, contact_id);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        *contact_key = sqlite3_column_int64(s, 0);
        *customer_key = sqlite3_column_int64(s, 1);
    }
    sqlite3_reset(s);
    if (rc == SQLITE_DONE)
        return cad_fail(err, CAD_ENOTFOUND, "contact '%s' does not exist", contact_id);
    if (rc != SQLITE_ROW)
        return db_fail(st, err, rc, "looking up a contact");
    return 0;
}

int cad_store_consent_set(cad_store_t *st, const char *contact_id, const cad_consent_input_t *c,
                          char *err)
{
    int64_t contact_key = 0, customer_key = 0;
    int r = contact_lookup(st, contact_id, &contact_key, &customer_key, err);
    if (r < 0)
        return r;
    cad_time_t now = wall_now();
    if ((r = write_begin(st, err)) < 0)
        return r;
    r = consent_write(st, contact_key, contact_id, c, now, err);
    if (r == 0)
        r = schedule_customer(st, customer_key, now, err);
    return write_end(st, r, err);
}

int cad_store_contact_mark_unusable(cad_store_t *st, int64_t contact_key, const char *channel,
                                    enum cad_address_kind address, const char *reason,
                                    cad_time_t now, char *err)
{
    if (!channel || !*channel)
        return cad_fail(err, CAD_EINVAL, "contact %lld: no channel named to mark unusable",
                        (long long)contact_key);
    sqlite3_stmt *s = stmt(st, S_CONTACT_EXISTS);
    sqlite3_bind_int64(s, 1, contact_key);
    int rc = sqlite3_step(s);
    int64_t customer_key = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
    sqlite3_reset(s);
    if (rc == SQLITE_DONE)
        return cad_fail(err, CAD_ENOTFOUND, "contact key %lld does not exist",
                        (long long)contact_key);
    if (rc != SQLITE_ROW)
        return db_fail(st, err, rc, "looking up a contact");
    int r = write_begin(st, err);
    if (r < 0)
        return r;
    s = stmt(st, S_CONTACT_UNUSABLE);
    sqlite3_bind_int64(s, 1, contact_key);
    bind_text(s, 2, channel);
    bind_text(s, 3, reason ? reason : "");
    sqlite3_bind_int64(s, 4, now);
    bind_text(s, 5,
              address == CAD_ADDRESS_EMAIL   ? "email"
              : address == CAD_ADDRESS_PHONE ? "phone"
                                             : "none");
    r = exec_stmt(st, s, err, "marking a channel unusable");
    if (r == 0)
        r = schedule_customer(st, customer_key, now, err);
    return write_end(st, r, err);
}

int cad_store_contact_mark_usable(cad_store_t *st, const char *contact_id, const char *channel,
                                  cad_time_t now, char *err)
{
    if (!channel || !*channel)
        return cad_fail(err, CAD_EINVAL, "contact %s: no channel named to mark usable",
                        contact_id ? contact_id : "");
    int64_t contact_key = 0, customer_key = 0;
    int r = contact_lookup(st, contact_id, &contact_key, &customer_key, err);
    if (r < 0)
        return r;
    if ((r = write_begin(st, err)) < 0)
        return r;
    sqlite3_stmt *s = stmt(st, S_CONTACT_USABLE);
    sqlite3_bind_int64(s, 1, contact_key);
    bind_text(s, 2, channel);
    r = exec_stmt(st, s, err, "marking a channel usable");
    if (r == 0 && sqlite3_changes(st->db) == 0)
        r = cad_fail(err, CAD_ENOTFOUND, "contact %s: channel %s is not marked unusable",
                     contact_id, channel);
    if (r == 0)
        r = schedule_customer(st, customer_key, now, err);
    return write_end(st, r, err);
}

/* The stored form of a suppressed address: an email lower-cased, or an
 * E.164 number; -CAD_EINVAL for anything else. */
int cad_store_suppression_address(const char *address, char norm[256], char *err)
{
    if (address && strncasecmp(address, "mailto:", 7) == 0)
        address += 7; /* the address of a mailto: URI */
    if (!address || strlen(address) > 254)
        return cad_fail(err, CAD_EINVAL,
                        "suppression: an address is at most 254 bytes, not %zu (starting '%.*s')",
                        address ? strlen(address) : 0, address ? utf8_prefix(address, 40) : 0,
                        address ? address : "");
    bool email = strchr(address, '@') != NULL;
    if (email ? !email_valid(address) : !phone_valid(address))
        return cad_fail(err, CAD_EINVAL,
                        "suppression: '%s' is neither an email address nor an E.164 number "
                        "(+ and 7-15 digits)",
                        address);
    size_t n = strlen(address);
    for (size_t i = 0; i <= n; i++)
        norm[i] = email ? (char)tolower((unsigned char)address[i]) : address[i];
    return 0;
}

int cad_store_suppress_address(cad_store_t *st, const char *address, const char *reason,
                               cad_time_t now, char *err)
{
    char norm[256];
    int r = cad_store_suppression_address(address, norm, err);
    if (r < 0 || (r = write_begin(st, err)) < 0)
        return r;
    sqlite3_stmt *s = stmt(st, S_SUPPRESS);
    bind_text(s, 1, norm);
    bind_text(s, 2, reason ? reason : "");
    sqlite3_bind_int64(s, 3, now);
    r = exec_stmt(st, s, err, "adding a suppression");
    return write_end(st, r, err);
}

int cad_store_unsuppress_address(cad_store_t *st, const char *address, cad_time_t now,
                                 void (*fn)(int64_t customer_key, void *arg), void *arg, char *err)
{
    char norm[256];
    int r = cad_store_suppression_address(address, norm, err);
    if (r < 0 || (r = write_begin(st, err)) < 0)
        return r;
    sqlite3_stmt *s = stmt(st, S_UNSUPPRESS);
    bind_text(s, 1, norm);
    r = exec_stmt(st, s, err, "removing a suppression");
    if (r == 0 && sqlite3_changes(st->db) == 0)
        r = cad_fail(err, CAD_ENOTFOUND, "suppression: '%s' is not on the list", norm);
    if (r == 0) {
        s = stmt(st, S_SCHEDULE_ADDRESS);
        bind_text(s, 1, norm);
        sqlite3_bind_int64(s, 2, now);
        r = exec_stmt(st, s, err, "scheduling the customers of an address");
    }
    r = write_end(st, r, err);
    if (r < 0 || !fn)
        return r;
    /* The customers reachable again, for the live calendar. */
    s = stmt(st, S_CUSTOMERS_OF_ADDRESS);
    bind_text(s, 1, norm);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW)
        fn(sqlite3_column_int64(s, 0), arg);
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? 0 : db_fail(st, err, rc, "finding the customers of an address");
}

/* Steps `s` (bound already) and calls fn with each row's text, text and
 * integer columns; returns the row count or a store error naming `what`. */
static int foreach_text_text_int(cad_store_t *st, sqlite3_stmt *s,
                                 void (*fn)(const char *, const char *, int64_t, void *), void *arg,
                                 const char *what, char *err)
{
    int n = 0, rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        fn(col_text(s, 0), col_text(s, 1), sqlite3_column_int64(s, 2), arg);
        n++;
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE)
        return db_fail(st, err, rc, what);
    return n;
}

int cad_store_suppression_foreach(cad_store_t *st, int limit,
                                  void (*fn)(const char *address, const char *reason, cad_time_t at,
                                             void *arg),
                                  void *arg, char *err)
{
    sqlite3_stmt *s = stmt(st, S_SUPPRESSION_LIST);
    sqlite3_bind_int(s, 1, limit > 0 ? limit : -1);
    return foreach_text_text_int(st, s, fn, arg, "listing suppressions", err);
}

int cad_store_event_add(cad_store_t *st, const cad_event_input_t *in, cad_time_t now, char *err)
{
    int r = check_id(in->id, "event", err);
    if (r < 0)
        return r;
    if (!in->customer_id || !*in->customer_id)
        return cad_fail(err, CAD_EINVAL, "event %s: field customer is required", in->id);
    if (!in->type || !*in->type || strlen(in->type) >= CAD_NAME_MAX)
        return cad_fail(err, CAD_EINVAL, "event %s: field type is required (1-%d bytes)", in->id,
                        CAD_NAME_MAX - 1);
    if (in->at <= 0)
        return cad_fail(err, CAD_EINVAL, "event %s: field at is required", in->id);
    int64_t customer_key;
    if ((r = lookup_customer(st, in->customer_id, &customer_key, err)) < 0)
        return r == -CAD_ENOTFOUND
                   ? cad_fail(err, CAD_ENOTFOUND,
                              "event %s: field customer: customer '%s' does not exist", in->id,
                              in->customer_id)
                   : r;
    if ((r = write_begin_light(st, err)) < 0)
        return r;
    sqlite3_stmt *s = stmt(st, S_EVENT_INSERT);
    bind_text(s, 1, in->id);
    sqlite3_bind_int64(s, 2, customer_key);
    bind_text(s, 3, in->type);
    sqlite3_bind_int64(s, 4, in->at);
    bind_text(s, 5, in->data);
    sqlite3_bind_int64(s, 6, now);
    r = exec_stmt(st, s, err, "saving an event");
    if (r == 0 && sqlite3_changes(st->db) == 0)
        r = cad_fail(err, CAD_EEXIST, "event %s: already recorded", in->id);
    if (r == 0)
        r = schedule_customer(st, customer_key, now, err);
    return write_end(st, r, err);
}

int cad_store_customer_pause(cad_store_t *st, const char *customer_id, bool paused, cad_time_t now,
                             char *err)
{
    int r = check_id(customer_id, "customer", err);
    if (r < 0 || (r = write_begin(st, err)) < 0)
        return r;
    sqlite3_stmt *s = stmt(st, S_CUSTOMER_PAUSE);
    bind_text(s, 1, customer_id);
    sqlite3_bind_int(s, 2, paused ? 1 : 0);
    sqlite3_bind_int64(s, 3, now);
    r = exec_stmt(st, s, err, "pausing a customer");
    if (r == 0 && sqlite3_changes(st->db) == 0)
        r = cad_fail(err, CAD_ENOTFOUND, "customer '%s' does not exist", customer_id);
    return write_end(st, r, err);
}

/* ---- the calendar and the engine ---------------------------------------- */

int cad_store_schedule_foreach(cad_store_t *st,
                               void (*fn)(int64_t key, cad_time_t next_eval, void *arg), void *arg,
                               char *err)
{
    sqlite3_stmt *s = stmt(st, S_SCHEDULE_ALL);
    int n = 0, rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        fn(sqlite3_column_int64(s, 0), sqlite3_column_int64(s, 1), arg);
        n++;
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE)
        return db_fail(st, err, rc, "reading the schedule");
    return n;
}

void cad_snapshot_buf_free(cad_snapshot_buf_t *buf)
{
    if (!buf)
        return;
    free(buf->contacts);
    free(buf->events);
    free(buf->history);
    free(buf->strings);
    memset(buf, 0, sizeof(*buf));
}

/* Appends a string to the buffer's arena; returns its offset or -1. The
 * arena may move while loading, so pointers are fixed up at the end. */
static ptrdiff_t arena_add(cad_snapshot_buf_t *buf, const char *s)
{
    size_t n = strlen(s) + 1;
    if (buf->strings_len + n > buf->strings_cap) {
        size_t cap = buf->strings_cap ? buf->strings_cap : 1024;
        while (cap < buf->strings_len + n)
            cap *= 2;
        char *p = realloc(buf->strings, cap);
        if (!p)
            return -1;
        buf->strings = p;
        buf->strings_cap = cap;
    }
    memcpy(buf->strings + buf->strings_len, s, n);
    ptrdiff_t off = (ptrdiff_t)buf->strings_len;
    buf->strings_len += n;
    return off;
}

static bool grow(void **arr, int *cap, int need, size_t elem)
{
    if (need <= *cap)
        return true;
    int c = *cap ? *cap : 16;
    while (c < need)
        c *= 2;
    void *p = realloc(*arr, (size_t)c * elem);
    if (!p)
        return false;
    *arr = p;
    *cap = c;
    return true;
}

/* Calls fn(name, len, arg) for each item of a comma-separated list. */
static void list_each(const char *list, void (*fn)(const char *name, void *arg), void *arg)
{
    char item[CAD_NAME_MAX];
    const char *p = list;
    while (*p) {
        const char *start = p;
        while (*p && *p != ',')
            p++;
        size_t n = (size_t)(p - start);
        if (n > 0 && n < sizeof(item)) {
            memcpy(item, start, n);
            item[n] = '\0';
            fn(item, arg);
        }
        if (*p == ',')
            p++;
    }
}

struct mask_ctx {
    const cad_playbook_t *pb;
    uint64_t mask;
};

static void add_topic(const char *name, void *arg)
{
    struct mask_ctx *m = arg;
    int t = cad_playbook_topic(m->pb, name);
    if (t >= 0)
        m->mask |= UINT64_C(1) << t;
}

static void add_role(const char *name, void *arg)
{
    struct mask_ctx *m = arg;
    int r = cad_playbook_role(m->pb, name);
    if (r >= 0)
        m->mask |= UINT64_C(1) << r;
}

int cad_store_load_snapshot(cad_store_t *st, const cad_playbook_t *pb, int64_t key,
                            cad_snapshot_buf_t *buf, cad_snapshot_t *snap, char *err)
{
    memset(snap, 0, sizeof(*snap));
    buf->strings_len = 0;
    int r = 0, rc;
    ptrdiff_t off;

    /* customer */
    sqlite3_stmt *s = stmt(st, S_CUSTOMER_GET);
    sqlite3_bind_int64(s, 1, key);
    rc = sqlite3_step(s);
    if (rc != SQLITE_ROW) {
        sqlite3_reset(s);
        if (rc == SQLITE_DONE)
            return cad_fail(err, CAD_ENOTFOUND, "customer key %lld does not exist", (long long)key);
        return db_fail(st, err, rc, "loading a customer");
    }
    cad_customer_t *cu = &snap->customer;
    cu->key = key;
    ptrdiff_t id_off = arena_add(buf, col_text(s, 0));
    int stage = cad_stage_parse(col_text(s, 1));
    cu->stage = stage < 0 ? CAD_STAGE_PROSPECT : (enum cad_stage)stage;
    cu->policy = cad_playbook_policy(pb, col_text(s, 2));
    struct mask_ctx m = {pb, 0};
    list_each(col_text(s, 3), add_topic, &m);
    cu->interests = m.mask;
    char tzerr[CAD_ERRBUF];
    cu->tz = cad_tz_get(col_text(s, 4), tzerr);
    if (!cu->tz)
        cu->tz = cad_tz_utc();
    cu->paused = sqlite3_column_int(s, 5) != 0;
    cu->created_at = sqlite3_column_int64(s, 6);
    sqlite3_reset(s);
    if (id_off < 0)
        return cad_fail(err, CAD_ENOMEM, "loading customer key %lld: out of memory",
                        (long long)key);

    /* contacts, with reachability per channel (R10) */
    int nc = 0;
    s = stmt(st, S_SNAP_CONTACTS);
    sqlite3_bind_int64(s, 1, key);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (!grow((void **)&buf->contacts, &buf->contacts_cap, nc + 1, sizeof(cad_contact_t)) ||
            (off = arena_add(buf, col_text(s, 1))) < 0) {
            r = cad_fail(err, CAD_ENOMEM, "loading customer key %lld: out of memory",
                         (long long)key);
            break;
        }
        cad_contact_t *c = &buf->contacts[nc++];
        memset(c, 0, sizeof(*c));
        c->key = sqlite3_column_int64(s, 0);
        c->id = (const char *)(uintptr_t)off;
        m.mask = 0;
        list_each(col_text(s, 2), add_role, &m);
        c->roles = (uint32_t)m.mask;
        bool has_email = *col_text(s, 3) != '\0';
        bool has_phone = *col_text(s, 4) != '\0';
        bool email_ok = sqlite3_column_type(s, 5) != SQLITE_NULL && sqlite3_column_int(s, 5);
        bool sms_ok = sqlite3_column_type(s, 6) != SQLITE_NULL && sqlite3_column_int(s, 6);
        bool email_suppressed = sqlite3_column_int(s, 7) != 0;
        bool phone_suppressed = sqlite3_column_int(s, 8) != 0;
        for (int ch = 0; ch < pb->n_channels && ch < CAD_MAX_CHANNELS; ch++) {
            uint16_t bit = (uint16_t)(1u << ch);
            switch (pb->channels[ch].address) {
            case CAD_ADDRESS_EMAIL:
                if (has_email && !email_ok)
                    c->no_consent |= bit;
                if (has_email && email_ok && !email_suppressed)
                    c->reachable |= bit;
                break;
            case CAD_ADDRESS_PHONE:
                if (has_phone && !sms_ok)
                    c->no_consent |= bit;
                if (has_phone && sms_ok && !phone_suppressed)
                    c->reachable |= bit;
                break;
            case CAD_ADDRESS_NONE: c->reachable |= bit; break;
            }
        }
    }
    sqlite3_reset(s);
    if (r < 0)
        return r;
    if (rc != SQLITE_DONE)
        return db_fail(st, err, rc, "loading contacts");

    s = stmt(st, S_SNAP_UNUSABLE);
    sqlite3_bind_int64(s, 1, key);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        int64_t ck = sqlite3_column_int64(s, 0);
        int ch = cad_playbook_channel(pb, col_text(s, 1));
        if (ch < 0 || ch >= CAD_MAX_CHANNELS)
            continue;
        for (int i = 0; i < nc; i++)
            if (buf->contacts[i].key == ck) {
                buf->contacts[i].unusable |= (uint16_t)(1u << ch);
                buf->contacts[i].reachable &= (uint16_t) ~(1u << ch);
            }
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE)
        return db_fail(st, err, rc, "loading unusable channels");

    /* events of known types, oldest first */
    int ne = 0;
    s = stmt(st, S_SNAP_EVENTS);
    sqlite3_bind_int64(s, 1, key);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        int type = cad_playbook_event_type(pb, col_text(s, 2));
        if (type < 0)
            continue;
        if (!grow((void **)&buf->events, &buf->events_cap, ne + 1, sizeof(cad_event_t)) ||
            (off = arena_add(buf, col_text(s, 1))) < 0) {
            r = cad_fail(err, CAD_ENOMEM, "loading customer key %lld: out of memory",
                         (long long)key);
            break;
        }
        cad_event_t *e = &buf->events[ne++];
        e->key = sqlite3_column_int64(s, 0);
        e->id = (const char *)(uintptr_t)off;
        e->type = type;
        e->at = sqlite3_column_int64(s, 3);
    }
    sqlite3_reset(s);
    if (r < 0)
        return r;
    if (rc != SQLITE_DONE)
        return db_fail(st, err, rc, "loading events");

    /* history: touches and final suppressions */
    int nh = 0;
    s = stmt(st, S_SNAP_HISTORY);
    sqlite3_bind_int64(s, 1, key);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (!grow((void **)&buf->history, &buf->history_cap, nh + 1, sizeof(cad_history_t))) {
            r = cad_fail(err, CAD_ENOMEM, "loading customer key %lld: out of memory",
                         (long long)key);
            break;
        }
        cad_history_t *h = &buf->history[nh++];
        const char *rule = col_text(s, 0);
        h->rule = -1;
        for (int i = 0; i < pb->n_rules; i++)
            if (strcmp(pb->rules[i].name, rule) == 0) {
                h->rule = i;
                break;
            }
        int purpose = cad_purpose_parse(col_text(s, 1));
        h->purpose = purpose < 0 ? CAD_PURPOSE_VALUE : (enum cad_purpose)purpose;
        const char *channel = col_text(s, 2);
        h->channel = *channel ? cad_playbook_channel(pb, channel) : -1;
        const char *state = col_text(s, 3);
        int os = outbox_state_parse(state);
        h->at = sqlite3_column_int64(s, 4);
        switch (os) {
        case CAD_OUTBOX_DELIVERED:
            h->state = CAD_TOUCH_DELIVERED;
            h->at = sqlite3_column_int64(s, 5);
            break;
        case CAD_OUTBOX_DEAD:
        case CAD_OUTBOX_CANCELLED:
            /* An attempt may have reached the customer: count it as sent,
             * when that attempt ended. */
            if (sqlite3_column_int64(s, 8) > 0) {
                h->state = CAD_TOUCH_DELIVERED;
                h->at = sqlite3_column_int64(s, 8);
            } else {
                h->state = CAD_TOUCH_FAILED;
            }
            break;
        case CAD_OUTBOX_QUEUED:
        case CAD_OUTBOX_IN_FLIGHT:
        case CAD_OUTBOX_RETRY_WAIT: h->state = CAD_TOUCH_PENDING; break;
        default: h->state = CAD_TOUCH_DROPPED; break;
        }
        h->trigger_key = sqlite3_column_int64(s, 6);
        const char *content = col_text(s, 7);
        h->content = *content ? cad_playbook_content(pb, content) : -1;
    }
    sqlite3_reset(s);
    if (r < 0)
        return r;
    if (rc != SQLITE_DONE)
        return db_fail(st, err, rc, "loading touch history");
    /* delivered rows take their delivery time: keep the order by `at` */
    for (int i = 1; i < nh; i++) {
        cad_history_t h = buf->history[i];
        int j = i - 1;
        while (j >= 0 && buf->history[j].at > h.at) {
            buf->history[j + 1] = buf->history[j];
            j--;
        }
        buf->history[j + 1] = h;
    }

    /* the arena is complete: turn offsets into pointers */
    cu->id = buf->strings + id_off;
    for (int i = 0; i < nc; i++)
        buf->contacts[i].id = buf->strings + (uintptr_t)buf->contacts[i].id;
    for (int i = 0; i < ne; i++)
        buf->events[i].id = buf->strings + (uintptr_t)buf->events[i].id;
    snap->contacts = buf->contacts;
    snap->n_contacts = nc;
    snap->events = buf->events;
    snap->n_events = ne;
    snap->history = buf->history;
    snap->n_history = nh;
    return 0;
}

static const char *alert_kind_name(uint32_t bit)
{
    switch (bit) {
    case CAD_ALERT_CONTENT_GAP: return "content_gap";
    case CAD_ALERT_LOOP_OVERDUE: return "loop_overdue";
    case CAD_ALERT_SILENT: return "silent";
    default: return "unknown";
    }
}

/* The rule an alert is about: the first verdict that explains it. */
static int alert_rule(const cad_playbook_t *pb, const cad_decision_t *dec, uint32_t bit)
{
    for (int i = 0; i < dec->n_verdicts; i++) {
        const cad_verdict_t *v = &dec->verdicts[i];
        if (v->rule < 0 || v->rule >= pb->n_rules)
            continue;
        const cad_rule_t *rule = &pb->rules[v->rule];
        if (bit == CAD_ALERT_CONTENT_GAP &&
            (v->reason == CAD_REASON_CONTENT_GAP || v->reason == CAD_REASON_LOW_RELEVANCE ||
             v->reason == CAD_REASON_VALUE_FIRST))
            return v->rule;
        if (bit == CAD_ALERT_LOOP_OVERDUE && rule->sla > 0)
            return v->rule;
        if (bit == CAD_ALERT_SILENT && rule->trigger == CAD_TRIGGER_SILENCE)
            return v->rule;
    }
    return -1;
}

static int write_touch(cad_store_t *st, const cad_playbook_t *pb, const cad_snapshot_t *snap,
                       const cad_verdict_t *v, bool dropped, cad_time_t now, const char *reason,
                       char *err)
{
    char key[TOUCH_KEY_MAX];
    int n = cad_touch_key(pb, snap, v, key, sizeof(key));
    if (n < 0 || (size_t)n >= sizeof(key))
        return cad_fail(err, CAD_EINVAL, "customer %s: rule %s: no idempotency key",
                        snap->customer.id, pb->rules[v->rule].name);
    const cad_rule_t *rule = &pb->rules[v->rule];
    sqlite3_stmt *s = stmt(st, S_TOUCH_INSERT);
    bind_text(s, 1, key);
    sqlite3_bind_int64(s, 2, snap->customer.key);
    bind_text(s, 3, rule->name);
    bind_text(s, 4, cad_purpose_name(rule->purpose));
    bind_text(s, 5,
              !dropped && v->channel >= 0 && v->channel < pb->n_channels
                  ? pb->channels[v->channel].name
                  : "");
    if (!dropped && v->contact >= 0 && v->contact < snap->n_contacts)
        sqlite3_bind_int64(s, 6, snap->contacts[v->contact].key);
    else
        sqlite3_bind_null(s, 6);
    bind_text(s, 7,
              v->content >= 0 && v->content < pb->n_content ? pb->content[v->content].id : "");
    sqlite3_bind_int64(s, 8, v->trigger_key);
    bind_text(s, 9, dropped ? STATE_DROPPED : "queued");
    sqlite3_bind_int64(s, 10, now);
    sqlite3_bind_int64(s, 11, dropped ? now : v->expires_at);
    bind_text(s, 12, dropped ? reason : "");
    return exec_stmt(st, s, err, dropped ? "recording a final suppression" : "queueing a touch");
}

int cad_store_record_decision(cad_store_t *st, const cad_playbook_t *pb, const cad_snapshot_t *snap,
                              const cad_decision_t *dec, cad_time_t now, char *err)
{
    int64_t ckey = snap->customer.key;
    for (int i = 0; i < dec->n_verdicts; i++)
        if (dec->verdicts[i].rule < 0 || dec->verdicts[i].rule >= pb->n_rules)
            return cad_fail(err, CAD_EINVAL, "customer %s: verdict %d names rule %d of %d",
                            snap->customer.id, i, dec->verdicts[i].rule, pb->n_rules);
    if (dec->chosen >= 0 && dec->chosen < dec->n_verdicts) {
        const cad_verdict_t *v = &dec->verdicts[dec->chosen];
        if (v->channel < 0 || v->channel >= pb->n_channels || v->contact >= snap->n_contacts)
            return cad_fail(err, CAD_EINVAL,
                            "customer %s: the chosen touch of rule %s names no channel or an"
                            " unknown contact",
                            snap->customer.id, pb->rules[v->rule].name);
    }
    /* Every refusal comes before the first write (the checks above; a key
     * always fits TOUCH_KEY_MAX): inside a batch the decision then needs no
     * savepoint of its own (a store failure rolls the whole batch back, and
     * the scheduler retries all of it). */
    int r = write_begin_light(st, err);
    if (r < 0)
        return r;
    char sentence[1024];
    for (int i = 0; r == 0 && i < dec->n_verdicts; i++) {
        const cad_verdict_t *v = &dec->verdicts[i];
        if (v->kind == CAD_VERDICT_SKIP)
            continue;
        if (st->no_traces) {
            if (v->kind == CAD_VERDICT_SUPPRESS && v->final)
                r = write_touch(st, pb, snap, v, true, now, cad_reason_name(v->reason), err);
            continue;
        }
        cad_verdict_describe(pb, snap, v, sentence, sizeof(sentence));
        sqlite3_stmt *s = stmt(st, S_TRACE_INSERT);
        sqlite3_bind_int64(s, 1, ckey);
        sqlite3_bind_int64(s, 2, now);
        bind_text(s, 3, pb->rules[v->rule].name);
        bind_text(s, 4, cad_verdict_name(v->kind));
        bind_text(s, 5, cad_reason_name(v->reason));
        bind_text(s, 6, sentence);
        bind_text(s, 7,
                  v->channel >= 0 && v->channel < pb->n_channels ? pb->channels[v->channel].name
                                                                 : "");
        bind_text(s, 8,
                  v->contact >= 0 && v->contact < snap->n_contacts ? snap->contacts[v->contact].id
                                                                   : "");
        bind_text(s, 9,
                  v->content >= 0 && v->content < pb->n_content ? pb->content[v->content].id : "");
        sqlite3_bind_int64(
            s, 10, v->kind == CAD_VERDICT_WAIT || v->kind == CAD_VERDICT_DEFER ? v->until : 0);
        r = exec_stmt(st, s, err, "recording a trace");
        if (r == 0 && v->kind == CAD_VERDICT_SUPPRESS && v->final)
            r = write_touch(st, pb, snap, v, true, now, cad_reason_name(v->reason), err);
    }
    if (r == 0 && !st->no_traces) {
        sqlite3_stmt *s = stmt(st, S_TRACE_TRIM);
        sqlite3_bind_int64(s, 1, ckey);
        sqlite3_bind_int(s, 2, TRACE_KEEP);
        r = exec_stmt(st, s, err, "trimming traces");
    }
    if (r == 0 && dec->chosen >= 0 && dec->chosen < dec->n_verdicts)
        r = write_touch(st, pb, snap, &dec->verdicts[dec->chosen], false, now, "", err);
    if (r == 0) {
        sqlite3_stmt *s = stmt(st, S_CUSTOMER_NEXT_EVAL);
        sqlite3_bind_int64(s, 1, ckey);
        sqlite3_bind_int64(s, 2, dec->next_eval);
        r = exec_stmt(st, s, err, "scheduling a customer");
    }
    if (r == 0 && !st->in_batch)
        r = count_decisions(st, 1, err); /* in a batch: once, at its commit */
    static const uint32_t alert_bits[] = {CAD_ALERT_CONTENT_GAP, CAD_ALERT_LOOP_OVERDUE,
                                          CAD_ALERT_SILENT};
    if (r == 0 && !st->no_traces && alert_may_be_open(st, ckey)) {
        /* One statement closes the open alerts of every kind not raised. */
        sqlite3_stmt *s = stmt(st, S_ALERT_CLOSE);
        sqlite3_bind_int64(s, 1, ckey);
        sqlite3_bind_int64(s, 2, now);
        for (unsigned i = 0; i < CAD_ARRAY_LEN(alert_bits); i++)
            bind_text(s, 3 + (int)i,
                      dec->alerts & alert_bits[i] ? NULL : alert_kind_name(alert_bits[i]));
        r = exec_stmt(st, s, err, "closing alerts");
    }
    for (unsigned i = 0; r == 0 && !st->no_traces && i < CAD_ARRAY_LEN(alert_bits); i++) {
        uint32_t bit = alert_bits[i];
        if (dec->alerts & bit) {
            int rule = alert_rule(pb, dec, bit);
            sqlite3_stmt *s = stmt(st, S_ALERT_OPEN);
            bind_text(s, 1, alert_kind_name(bit));
            sqlite3_bind_int64(s, 2, ckey);
            bind_text(s, 3, rule >= 0 ? pb->rules[rule].name : "");
            if (rule >= 0) {
                const cad_verdict_t *v = &dec->verdicts[0];
                for (int k = 0; k < dec->n_verdicts; k++)
                    if (dec->verdicts[k].rule == rule)
                        v = &dec->verdicts[k];
                cad_verdict_describe(pb, snap, v, sentence, sizeof(sentence));
            } else {
                snprintf(sentence, sizeof(sentence), "%s", alert_kind_name(bit));
            }
            bind_text(s, 4, sentence);
            sqlite3_bind_int64(s, 5, now);
            alert_mark(st, ckey); /* before: a failed insert may still have opened it */
            r = exec_stmt(st, s, err, "recording an alert");
        }
    }
    /* A statement that failed after others wrote cannot be undone alone
     * without a savepoint: it fails the whole batch, never as a refusal. */
    if (is_refusal(r))
        r = -CAD_ESTORE;
    bool batched = st->in_batch;
    r = write_end(st, r, err);
    if (r == 0 && batched && st->in_batch)
        st->batch_decisions++;
    return r;
}

/* ---- the outbox --------------------------------------------------------- */

static bool claim_add_string(cad_store_t *st, const char *s, size_t *off)
{
    size_t n = strlen(s) + 1;
    if (st->claim_len + n > st->claim_cap_strings) {
        size_t cap = st->claim_cap_strings ? st->claim_cap_strings : 4096;
        while (cap < st->claim_len + n)
            cap *= 2;
        char *p = realloc(st->claim_strings, cap);
        if (!p)
            return false;
        st->claim_strings = p;
        st->claim_cap_strings = cap;
    }
    memcpy(st->claim_strings + st->claim_len, s, n);
    *off = st->claim_len;
    st->claim_len += n;
    return true;
}

/* Copies one OUTBOX_SELECT row into `row`; strings go to the claim arena
 * (fixed up by outbox_row_fix once the arena stops moving). */
static bool outbox_row_read(cad_store_t *st, sqlite3_stmt *s, bool checks, claim_row_t *row)
{
    memset(row, 0, sizeof(*row));
    cad_outbox_touch_t *t = &row->touch;
    t->key = sqlite3_column_int64(s, 0);
    for (int i = 0; i < OUTBOX_STRINGS; i++)
        if (!claim_add_string(st, col_text(s, 1 + i), &row->off[i]))
            return false;
    int c = 1 + OUTBOX_STRINGS;
    t->attempt = sqlite3_column_int(s, c);
    t->decided_at = sqlite3_column_int64(s, c + 1);
    t->due_at = sqlite3_column_int64(s, c + 2);
    t->expires_at = sqlite3_column_int64(s, c + 3);
    t->customer_key = sqlite3_column_int64(s, c + 4);
    t->contact_key = sqlite3_column_int64(s, c + 5);
    t->updated_at = sqlite3_column_int64(s, c + 6);
    int state = outbox_state_parse(col_text(s, 14));
    t->state = state < 0 ? CAD_OUTBOX_DEAD : (enum cad_outbox_state)state;
    if (checks) {
        t->email_consent = sqlite3_column_int(s, c + 7) != 0;
        t->sms_consent = sqlite3_column_int(s, c + 8) != 0;
        t->email_suppressed = sqlite3_column_int(s, c + 9) != 0;
        t->phone_suppressed = sqlite3_column_int(s, c + 10) != 0;
        t->unusable = sqlite3_column_int(s, c + 11) != 0;
    }
    return true;
}

static void outbox_row_fix(cad_store_t *st, claim_row_t *row)
{
    const char *b = st->claim_strings;
    cad_outbox_touch_t *t = &row->touch;
    t->idempotency_key = b + row->off[0];
    t->customer_id = b + row->off[1];
    t->contact_id = b + row->off[2];
    t->rule = b + row->off[3];
    t->purpose = b + row->off[4];
    t->channel = b + row->off[5];
    t->content_id = b + row->off[6];
    t->customer_name = b + row->off[7];
    t->customer_attributes = b + row->off[8];
    t->contact_name = b + row->off[9];
    t->contact_first_name = b + row->off[10];
    t->contact_email = b + row->off[11];
    t->contact_phone = b + row->off[12];
    /* off[13] is the state, parsed already */
    t->last_error = b + row->off[14];
    t->provider_id = b + row->off[15];
}

/* Claims due touches of every channel (channel NULL) or of one. */
static int outbox_claim(cad_store_t *st, const char *channel, cad_time_t now, int max,
                        void (*fn)(const cad_outbox_touch_t *t, void *arg), void *arg, char *err)
{
    if (max <= 0)
        return 0;
    int r = write_begin_light(st, err);
    if (r < 0)
        return r;
    sqlite3_stmt *s = stmt(st, S_OUTBOX_EXPIRE);
    sqlite3_bind_int64(s, 1, now);
    r = exec_stmt(st, s, err, "expiring stale touches");
    int n = 0, rc = SQLITE_DONE;
    st->claim_len = 0;
    if (r == 0) {
        s = stmt(st, channel ? S_OUTBOX_DUE_CHANNEL : S_OUTBOX_DUE);
        sqlite3_bind_int64(s, 1, now);
        sqlite3_bind_int(s, 2, max);
        if (channel)
            bind_text(s, 3, channel);
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
            if (!grow((void **)&st->claim_rows, &st->claim_cap, n + 1, sizeof(claim_row_t))) {
                r = cad_fail(err, CAD_ENOMEM, "store %s: out of memory claiming touches", st->path);
                break;
            }
            if (!outbox_row_read(st, s, true, &st->claim_rows[n])) {
                r = cad_fail(err, CAD_ENOMEM, "store %s: out of memory claiming touches", st->path);
                break;
            }
            n++;
        }
        sqlite3_reset(s);
        if (r == 0 && rc != SQLITE_DONE)
            r = db_fail(st, err, rc, "reading due touches");
    }
    for (int i = 0; r == 0 && i < n; i++) {
        s = stmt(st, S_OUTBOX_CLAIM_ONE);
        sqlite3_bind_int64(s, 1, st->claim_rows[i].touch.key);
        sqlite3_bind_int64(s, 2, now);
        r = exec_stmt(st, s, err, "claiming a touch");
    }
    /* Without a savepoint a failed claim cannot be undone alone: whatever
     * the cause, the caller must roll the batch back. */
    if (is_refusal(r))
        r = -CAD_ESTORE;
    r = write_end(st, r, err);
    if (r < 0)
        return r;
    for (int i = 0; i < n; i++) {
        outbox_row_fix(st, &st->claim_rows[i]);
        st->claim_rows[i].touch.state = CAD_OUTBOX_IN_FLIGHT;
        st->claim_rows[i].touch.updated_at = now;
    }
    for (int i = 0; i < n; i++)
        fn(&st->claim_rows[i].touch, arg);
    return n;
}

int cad_store_outbox_get(cad_store_t *st, int64_t key,
                         void (*fn)(const cad_outbox_touch_t *t, void *arg), void *arg, char *err)
{
    sqlite3_stmt *s = stmt(st, S_OUTBOX_ONE);
    sqlite3_bind_int64(s, 1, key);
    st->claim_len = 0;
    claim_row_t row;
    int rc = sqlite3_step(s), r = 0;
    if (rc == SQLITE_ROW && !outbox_row_read(st, s, true, &row))
        r = cad_fail(err, CAD_ENOMEM, "store %s: out of memory reading a touch", st->path);
    else if (rc == SQLITE_DONE)
        r = cad_fail(err, CAD_ENOTFOUND, "outbox: no touch with key %lld", (long long)key);
    else if (rc != SQLITE_ROW)
        r = db_fail(st, err, rc, "reading a touch");
    sqlite3_reset(s);
    if (r == 0) {
        outbox_row_fix(st, &row);
        fn(&row.touch, arg);
    }
    return r;
}

int cad_store_outbox_history(cad_store_t *st, int64_t key,
                             void (*fn)(const cad_outbox_transition_t *t, void *arg), void *arg,
                             char *err)
{
    sqlite3_stmt *s = stmt(st, S_OUTBOX_STATE);
    sqlite3_bind_int64(s, 1, key);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc == SQLITE_DONE)
        return cad_fail(err, CAD_ENOTFOUND, "outbox: no touch with key %lld", (long long)key);
    if (rc != SQLITE_ROW)
        return db_fail(st, err, rc, "reading a touch");
    s = stmt(st, S_OUTBOX_HISTORY);
    sqlite3_bind_int64(s, 1, key);
    int n = 0;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        cad_outbox_transition_t t = {
            .at = sqlite3_column_int64(s, 0),
            .state = col_text(s, 1),
            .attempt = sqlite3_column_int(s, 2),
            .detail = col_text(s, 3),
        };
        fn(&t, arg);
        n++;
    }
    int r = rc == SQLITE_DONE ? n : db_fail(st, err, rc, "reading a touch's transitions");
    sqlite3_reset(s);
    return r;
}

int cad_store_outbox_claim(cad_store_t *st, cad_time_t now, int max,
                           void (*fn)(const cad_outbox_touch_t *t, void *arg), void *arg, char *err)
{
    return outbox_claim(st, NULL, now, max, fn, arg, err);
}

int cad_store_outbox_claim_channel(cad_store_t *st, const char *channel, cad_time_t now, int max,
                                   void (*fn)(const cad_outbox_touch_t *t, void *arg), void *arg,
                                   char *err)
{
    if (!channel || !*channel)
        return cad_fail(err, CAD_EINVAL, "outbox: no channel named to claim touches for");
    return outbox_claim(st, channel, now, max, fn, arg, err);
}

/* After an UPDATE matched nothing: says whether the touch is missing or in
 * the wrong state. */
static int outbox_explain(cad_store_t *st, int64_t key, const char *action, cad_time_t now,
                          char *err)
{
    sqlite3_stmt *s = stmt(st, S_OUTBOX_STATE);
    sqlite3_bind_int64(s, 1, key);
    int rc = sqlite3_step(s);
    char state[32] = "";
    cad_time_t expires_at = 0;
    if (rc == SQLITE_ROW) {
        snprintf(state, sizeof(state), "%s", col_text(s, 0));
        expires_at = sqlite3_column_int64(s, 1);
    }
    sqlite3_reset(s);
    if (rc == SQLITE_ROW && now >= expires_at &&
        (strcmp(state, "dead") == 0 || strcmp(state, "retry_wait") == 0) &&
        strcmp(action, "requeue") == 0)
        return cad_fail(err, CAD_EINVAL,
                        "touch %lld expired at %lld; a late touch is never sent (R11)",
                        (long long)key, (long long)expires_at);
    if (rc == SQLITE_ROW)
        return cad_fail(err, CAD_EINVAL, "touch %lld is %s, cannot %s it", (long long)key, state,
                        action);
    if (rc == SQLITE_DONE)
        return cad_fail(err, CAD_ENOTFOUND, "touch %lld does not exist", (long long)key);
    return db_fail(st, err, rc, "reading a touch");
}

static int outbox_update(cad_store_t *st, enum stmt_id id, int64_t key, const char *text,
                         cad_time_t t, cad_time_t now, const char *action, char *err)
{
    int r = write_begin_light(st, err);
    if (r < 0)
        return r;
    sqlite3_stmt *s = stmt(st, id);
    sqlite3_bind_int64(s, 1, key);
    if (id == S_OUTBOX_RETRY || id == S_OUTBOX_RETRY_UNSENT) {
        sqlite3_bind_int64(s, 2, t);
        bind_text(s, 3, text);
        sqlite3_bind_int64(s, 4, now);
    } else if (id == S_OUTBOX_CANCEL || id == S_OUTBOX_REQUEUE_ONE || id == S_OUTBOX_RELEASE) {
        sqlite3_bind_int64(s, 2, now);
    } else {
        bind_text(s, 2, text);
        sqlite3_bind_int64(s, 3, now);
    }
    r = exec_stmt(st, s, err, action);
    if (r == 0 && sqlite3_changes(st->db) == 0)
        r = outbox_explain(st, key, action, now, err);
    return write_end(st, r, err);
}

int cad_store_outbox_delivered(cad_store_t *st, int64_t key, const char *provider_id,
                               cad_time_t now, char *err)
{
    return outbox_update(st, S_OUTBOX_DELIVERED, key, provider_id, 0, now, "mark delivered", err);
}

int cad_store_outbox_retry(cad_store_t *st, int64_t key, cad_time_t retry_at, const char *error,
                           cad_time_t now, char *err)
{
    return outbox_update(st, S_OUTBOX_RETRY, key, error, retry_at, now, "schedule a retry of", err);
}

int cad_store_outbox_retry_unsent(cad_store_t *st, int64_t key, cad_time_t retry_at,
                                  const char *error, cad_time_t now, char *err)
{
    return outbox_update(st, S_OUTBOX_RETRY_UNSENT, key, error, retry_at, now,
                         "schedule a retry of", err);
}

int cad_store_outbox_dead(cad_store_t *st, int64_t key, const char *error, cad_time_t now,
                          char *err)
{
    return outbox_update(st, S_OUTBOX_DEAD, key, error, 0, now, "dead-letter", err);
}

int cad_store_outbox_dead_unsent(cad_store_t *st, int64_t key, const char *error, cad_time_t now,
                                 char *err)
{
    return outbox_update(st, S_OUTBOX_DEAD_UNSENT, key, error, 0, now, "dead-letter", err);
}

int cad_store_outbox_requeue_in_flight(cad_store_t *st, cad_time_t now, char *err)
{
    int r = write_begin(st, err);
    if (r < 0)
        return r;
    sqlite3_stmt *s = stmt(st, S_OUTBOX_REQUEUE);
    sqlite3_bind_int64(s, 1, now);
    r = exec_stmt(st, s, err, "requeueing in-flight touches");
    if (r == 0)
        r = sqlite3_changes(st->db);
    return write_end(st, r, err);
}

int cad_store_outbox_clock_stepped_back(cad_store_t *st, cad_time_t now, int64_t seconds, char *err)
{
    if (seconds <= 0)
        return 0;
    int r = write_begin(st, err);
    if (r < 0)
        return r;
    sqlite3_stmt *s = stmt(st, S_OUTBOX_CLOCK_BACK);
    sqlite3_bind_int64(s, 1, now);
    sqlite3_bind_int64(s, 2, now + seconds);
    r = exec_stmt(st, s, err, "moving due times after the clock stepped back");
    if (r == 0)
        r = sqlite3_changes(st->db);
    return write_end(st, r, err);
}

int cad_store_outbox_clock_stepped_forward(cad_store_t *st, cad_time_t now, int64_t seconds,
                                           const char *marker, char *err)
{
    if (seconds <= 0 || !marker || !*marker)
        return 0;
    int r = write_begin(st, err);
    if (r < 0)
        return r;
    sqlite3_stmt *s = stmt(st, S_OUTBOX_CLOCK_FORWARD);
    sqlite3_bind_int64(s, 1, now);
    sqlite3_bind_int64(s, 2, seconds);
    bind_text(s, 3, marker);
    r = exec_stmt(st, s, err, "moving held touches' turns after the clock stepped forward");
    if (r == 0)
        r = sqlite3_changes(st->db);
    return write_end(st, r, err);
}

int cad_store_outbox_maybe_delivered(cad_store_t *st, int64_t key, cad_time_t at, char *err)
{
    int r = write_begin_light(st, err);
    if (r < 0)
        return r;
    sqlite3_stmt *s = stmt(st, S_OUTBOX_MAYBE_DELIVERED);
    sqlite3_bind_int64(s, 1, key);
    sqlite3_bind_int64(s, 2, at);
    r = exec_stmt(st, s, err, "marking a touch as maybe delivered");
    return write_end(st, r, err);
}

int cad_store_outbox_cancel(cad_store_t *st, int64_t key, cad_time_t now, char *err)
{
    return outbox_update(st, S_OUTBOX_CANCEL, key, NULL, 0, now, "cancel", err);
}

int cad_store_outbox_requeue(cad_store_t *st, int64_t key, cad_time_t now, char *err)
{
    return outbox_update(st, S_OUTBOX_REQUEUE_ONE, key, NULL, 0, now, "requeue", err);
}

int cad_store_outbox_requeue_dead(cad_store_t *st, const char *channel, const char *customer_id,
                                  cad_time_t since, cad_time_t now, int64_t *requeued,
                                  int64_t *left, char *err)
{
    *requeued = *left = 0;
    int64_t customer_key = 0;
    int r = customer_id ? cad_store_customer_key(st, customer_id, &customer_key, err) : 0;
    if (r < 0 || (r = write_begin(st, err)) < 0)
        return r;
    sqlite3_stmt *s = stmt(st, S_OUTBOX_REQUEUE_DEAD);
    bind_text(s, 1, channel);
    sqlite3_bind_int64(s, 2, customer_key);
    sqlite3_bind_int64(s, 3, since);
    sqlite3_bind_int64(s, 4, now);
    r = exec_stmt(st, s, err, "requeueing dead touches");
    if (r == 0) {
        *requeued = sqlite3_changes(st->db);
        s = stmt(st, S_OUTBOX_COUNT_DEAD);
        bind_text(s, 1, channel);
        sqlite3_bind_int64(s, 2, customer_key);
        sqlite3_bind_int64(s, 3, since);
        int rc = sqlite3_step(s);
        if (rc == SQLITE_ROW)
            *left = sqlite3_column_int64(s, 0);
        else
            r = db_fail(st, err, rc, "counting dead touches");
        sqlite3_reset(s);
    }
    return write_end(st, r, err);
}

int cad_store_outbox_release(cad_store_t *st, int64_t key, cad_time_t now, char *err)
{
    return outbox_update(st, S_OUTBOX_RELEASE, key, NULL, 0, now, "release", err);
}

int cad_store_outbox_withdraw(cad_store_t *st, int64_t key, const char *reason, cad_time_t now,
                              char *err)
{
    return outbox_update(st, S_OUTBOX_WITHDRAW, key, reason, 0, now, "withdraw", err);
}

cad_time_t cad_store_outbox_next_due_channel(cad_store_t *st, const char *channel)
{
    sqlite3_stmt *s = stmt(st, S_OUTBOX_NEXT_DUE_CHANNEL);
    bind_text(s, 1, channel);
    cad_time_t t = CAD_TIME_NEVER;
    if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_type(s, 0) != SQLITE_NULL)
        t = sqlite3_column_int64(s, 0);
    sqlite3_reset(s);
    return t;
}

int cad_store_outbox_foreach(cad_store_t *st, int state, const char *customer_id, int limit,
                             void (*fn)(const cad_outbox_touch_t *t, void *arg), void *arg,
                             char *err)
{
    if (state >= (int)CAD_ARRAY_LEN(outbox_state_names))
        return cad_fail(err, CAD_EINVAL, "outbox: unknown state %d", state);
    if (customer_id) {
        int64_t key;
        int r = cad_store_customer_key(st, customer_id, &key, err);
        if (r < 0)
            return r;
    }
    sqlite3_stmt *s = stmt(st, S_OUTBOX_LIST);
    bind_text(s, 1, state >= 0 ? outbox_state_names[state] : NULL);
    bind_text(s, 2, customer_id);
    sqlite3_bind_int(s, 3, limit > 0 ? limit : -1);
    int n = 0, rc;
    claim_row_t row;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        st->claim_len = 0;
        if (!outbox_row_read(st, s, false, &row)) {
            sqlite3_reset(s);
            return cad_fail(err, CAD_ENOMEM, "store %s: out of memory listing touches", st->path);
        }
        outbox_row_fix(st, &row);
        fn(&row.touch, arg);
        n++;
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE)
        return db_fail(st, err, rc, "listing touches");
    return n;
}

cad_time_t cad_store_outbox_next_due(cad_store_t *st)
{
    sqlite3_stmt *s = stmt(st, S_OUTBOX_NEXT_DUE);
    cad_time_t t = CAD_TIME_NEVER;
    if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_type(s, 0) != SQLITE_NULL)
        t = sqlite3_column_int64(s, 0);
    sqlite3_reset(s);
    return t;
}

/* ---- queries ------------------------------------------------------------ */

static int count_one(cad_store_t *st, enum stmt_id id, int64_t *out, char *err)
{
    sqlite3_stmt *s = stmt(st, id);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_int64(s, 0);
    sqlite3_reset(s);
    return rc == SQLITE_ROW ? 0 : db_fail(st, err, rc, "counting");
}

int cad_store_counts(cad_store_t *st, cad_store_counts_t *out, char *err)
{
    memset(out, 0, sizeof(*out));
    int r;
    if ((r = count_one(st, S_COUNT_CUSTOMERS, &out->customers, err)) < 0 ||
        (r = count_one(st, S_COUNT_CONTACTS, &out->contacts, err)) < 0 ||
        (r = count_one(st, S_COUNT_EVENTS, &out->events, err)) < 0 ||
        (r = count_one(st, S_COUNT_DECISIONS, &out->decisions, err)) < 0 ||
        (r = count_one(st, S_COUNT_ALERTS, &out->alerts_open, err)) < 0)
        return r;
    if ((r = count_one(st, S_COUNT_PAUSED, &out->customers_paused, err)) < 0)
        return r;
    sqlite3_stmt *s = stmt(st, S_COUNT_OUTBOX);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        const char *name = col_text(s, 0);
        int state = outbox_state_parse(name);
        if (state >= 0)
            out->outbox[state] = sqlite3_column_int64(s, 1);
        else if (strcmp(name, STATE_DROPPED) == 0)
            out->dropped = sqlite3_column_int64(s, 1);
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE)
        return db_fail(st, err, rc, "counting touches");
    s = stmt(st, S_COUNT_ALERT_KINDS);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        const char *kind = col_text(s, 0);
        int64_t n = sqlite3_column_int64(s, 1);
        if (strcmp(kind, "content_gap") == 0)
            out->alerts_content_gap = n;
        else if (strcmp(kind, "loop_overdue") == 0)
            out->alerts_loop_overdue = n;
        else if (strcmp(kind, "silent") == 0)
            out->alerts_silent = n;
    }
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? 0 : db_fail(st, err, rc, "counting alerts");
}

int cad_store_backlog(cad_store_t *st, int64_t *queued, int64_t *alerts_open, char *err)
{
    int r = count_one(st, S_COUNT_BACKLOG, queued, err);
    return r < 0 ? r : count_one(st, S_COUNT_ALERTS, alerts_open, err);
}

int cad_store_trace_foreach(cad_store_t *st, const char *customer_id, int limit,
                            void (*fn)(const cad_trace_row_t *row, void *arg), void *arg, char *err)
{
    int64_t key;
    int r = cad_store_customer_key(st, customer_id, &key, err);
    if (r < 0)
        return r;
    sqlite3_stmt *s = stmt(st, S_TRACE_LIST);
    bind_text(s, 1, customer_id);
    sqlite3_bind_int(s, 2, limit > 0 ? limit : -1);
    int n = 0, rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        cad_trace_row_t row = {
            .at = sqlite3_column_int64(s, 0),
            .rule = col_text(s, 1),
            .verdict = col_text(s, 2),
            .reason = col_text(s, 3),
            .sentence = col_text(s, 4),
            .channel = col_text(s, 5),
            .contact = col_text(s, 6),
            .content = col_text(s, 7),
            .until = sqlite3_column_int64(s, 8),
        };
        fn(&row, arg);
        n++;
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE)
        return db_fail(st, err, rc, "reading traces");
    return n;
}

int cad_store_customer_get(cad_store_t *st, const char *customer_id,
                           void (*fn)(const cad_customer_row_t *row, void *arg), void *arg,
                           char *err)
{
    int r = check_id(customer_id, "customer", err);
    if (r < 0)
        return r;
    sqlite3_stmt *s = stmt(st, S_CUSTOMER_SHOW);
    bind_text(s, 1, customer_id);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        cad_customer_row_t row = {
            .key = sqlite3_column_int64(s, 0),
            .id = col_text(s, 1),
            .name = col_text(s, 2),
            .timezone = col_text(s, 3),
            .stage = col_text(s, 4),
            .segment = col_text(s, 5),
            .interests = col_text(s, 6),
            .attributes = col_text(s, 7),
            .paused = sqlite3_column_int(s, 8) != 0,
            .created_at = sqlite3_column_int64(s, 9),
            .updated_at = sqlite3_column_int64(s, 10),
            .next_eval = sqlite3_column_int64(s, 11),
        };
        fn(&row, arg);
    }
    sqlite3_reset(s);
    if (rc == SQLITE_DONE)
        return cad_fail(err, CAD_ENOTFOUND, "customer '%s' does not exist", customer_id);
    return rc == SQLITE_ROW ? 0 : db_fail(st, err, rc, "reading a customer");
}

static int consent_value(sqlite3_stmt *s, int col)
{
    return sqlite3_column_type(s, col) == SQLITE_NULL ? -1 : sqlite3_column_int(s, col) != 0;
}

int cad_store_contacts_foreach(cad_store_t *st, const char *customer_id,
                               void (*fn)(const cad_contact_row_t *row, void *arg), void *arg,
                               char *err)
{
    int64_t key;
    int r = cad_store_customer_key(st, customer_id, &key, err);
    if (r < 0)
        return r;
    sqlite3_stmt *s = stmt(st, S_CONTACT_LIST);
    sqlite3_bind_int64(s, 1, key);
    int n = 0, rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        cad_contact_row_t row = {
            .key = sqlite3_column_int64(s, 0),
            .id = col_text(s, 1),
            .name = col_text(s, 2),
            .first_name = col_text(s, 3),
            .roles = col_text(s, 4),
            .email = col_text(s, 5),
            .phone = col_text(s, 6),
            .email_consent = consent_value(s, 7),
            .sms_consent = consent_value(s, 8),
            .unusable = col_text(s, 9),
        };
        fn(&row, arg);
        n++;
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE)
        return db_fail(st, err, rc, "listing contacts");
    return n;
}

int cad_store_alerts_foreach(cad_store_t *st, bool open_only, int limit,
                             void (*fn)(const cad_alert_row_t *row, void *arg), void *arg,
                             char *err)
{
    sqlite3_stmt *s = stmt(st, S_ALERT_LIST);
    sqlite3_bind_int(s, 1, open_only ? 1 : 0);
    sqlite3_bind_int(s, 2, limit > 0 ? limit : -1);
    int n = 0, rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        cad_alert_row_t row = {
            .key = sqlite3_column_int64(s, 0),
            .kind = col_text(s, 1),
            .customer_id = col_text(s, 2),
            .rule = col_text(s, 3),
            .detail = col_text(s, 4),
            .first_at = sqlite3_column_int64(s, 5),
            .last_at = sqlite3_column_int64(s, 6),
            .closed_at = sqlite3_column_int64(s, 7),
            .open = sqlite3_column_int(s, 8) != 0,
        };
        fn(&row, arg);
        n++;
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE)
        return db_fail(st, err, rc, "listing alerts");
    return n;
}

int cad_store_report_foreach(cad_store_t *st, cad_time_t from, cad_time_t to,
                             void (*fn)(const cad_report_row_t *row, void *arg), void *arg,
                             char *err)
{
    if (to < from)
        return cad_fail(err, CAD_EINVAL, "report: the period ends before it starts");
    sqlite3_stmt *s = stmt(st, S_REPORT);
    sqlite3_bind_int64(s, 1, from);
    sqlite3_bind_int64(s, 2, to);
    int n = 0, rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        cad_report_row_t row = {
            .rule = col_text(s, 0),
            .purpose = col_text(s, 1),
            .outcome = col_text(s, 2),
            .reason = col_text(s, 3),
            .count = sqlite3_column_int64(s, 4),
        };
        fn(&row, arg);
        n++;
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE)
        return db_fail(st, err, rc, "building the report");
    return n;
}

/* ---- operator queries --------------------------------------------------- */

static void customer_row_read(sqlite3_stmt *s, cad_customer_row_t *row)
{
    *row = (cad_customer_row_t){
        .key = sqlite3_column_int64(s, 0),
        .id = col_text(s, 1),
        .name = col_text(s, 2),
        .timezone = col_text(s, 3),
        .stage = col_text(s, 4),
        .segment = col_text(s, 5),
        .interests = col_text(s, 6),
        .attributes = col_text(s, 7),
        .paused = sqlite3_column_int(s, 8) != 0,
        .created_at = sqlite3_column_int64(s, 9),
        .updated_at = sqlite3_column_int64(s, 10),
        .next_eval = sqlite3_column_int64(s, 11),
    };
}

int cad_store_customers_foreach(cad_store_t *st, const char *stage, const char *segment, int limit,
                                void (*fn)(const cad_customer_row_t *row, void *arg), void *arg,
                                char *err)
{
    sqlite3_stmt *s = stmt(st, S_CUSTOMER_LIST);
    bind_text(s, 1, stage);
    bind_text(s, 2, segment);
    sqlite3_bind_int64(s, 3, limit > 0 ? limit : -1);
    int n = 0, rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        cad_customer_row_t row;
        customer_row_read(s, &row);
        fn(&row, arg);
        n++;
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE)
        return db_fail(st, err, rc, "listing customers");
    return n;
}

int cad_store_contact_customer(cad_store_t *st, const char *contact_id, int64_t *customer_key,
                               char *customer_id, char *err)
{
    int r = check_id(contact_id, "contact", err);
    if (r < 0)
        return r;
    sqlite3_stmt *s = stmt(st, S_CONTACT_OWNER);
    bind_text(s, 1, contact_id);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        *customer_key = sqlite3_column_int64(s, 0);
        snprintf(customer_id, CAD_ID_MAX + 1, "%s", col_text(s, 1));
    }
    sqlite3_reset(s);
    if (rc == SQLITE_DONE)
        return cad_fail(err, CAD_ENOTFOUND, "contact '%s' does not exist", contact_id);
    return rc == SQLITE_ROW ? 0 : db_fail(st, err, rc, "looking a contact up");
}

int cad_store_calendar_foreach(cad_store_t *st, const char *customer_id, const char *rule,
                               int limit, void (*fn)(const cad_calendar_row_t *row, void *arg),
                               void *arg, char *err)
{
    sqlite3_stmt *s = stmt(st, rule ? S_CALENDAR_RULE : S_CALENDAR);
    bind_text(s, 1, customer_id);
    sqlite3_bind_int64(s, 2, limit > 0 ? limit : -1);
    if (rule)
        bind_text(s, 3, rule);
    else
        sqlite3_bind_int64(s, 3, CAD_TIME_NEVER);
    int n = 0, rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        cad_calendar_row_t row = {
            .customer_id = col_text(s, 0),
            .name = col_text(s, 1),
            .timezone = col_text(s, 2),
            .paused = sqlite3_column_int(s, 3) != 0,
            .next_eval = sqlite3_column_int64(s, 4),
            .rule = col_text(s, 5),
            .verdict = col_text(s, 6),
            .reason = col_text(s, 7),
            .sentence = col_text(s, 8),
            .until = sqlite3_column_int64(s, 9),
        };
        fn(&row, arg);
        n++;
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE)
        return db_fail(st, err, rc, "reading the calendar");
    return n;
}

int cad_store_due_between_foreach(cad_store_t *st, cad_time_t from, cad_time_t to,
                                  void (*fn)(int64_t key, void *arg), void *arg, char *err)
{
    sqlite3_stmt *s = stmt(st, S_DUE_BETWEEN);
    sqlite3_bind_int64(s, 1, from);
    sqlite3_bind_int64(s, 2, to);
    int n = 0, rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        fn(sqlite3_column_int64(s, 0), arg);
        n++;
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE)
        return db_fail(st, err, rc, "finding the customers an import touched");
    return n;
}

int cad_store_holdout_foreach(cad_store_t *st, cad_time_t from, cad_time_t to,
                              void (*fn)(const cad_holdout_row_t *row, void *arg), void *arg,
                              char *err)
{
    if (to < from)
        return cad_fail(err, CAD_EINVAL, "holdout: the period ends before it starts");
    sqlite3_stmt *s = stmt(st, S_HOLDOUT);
    sqlite3_bind_int64(s, 1, from);
    sqlite3_bind_int64(s, 2, to);
    int n = 0, rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        cad_holdout_row_t row = {
            .rule = col_text(s, 0),
            .group = col_text(s, 1),
            .customers = sqlite3_column_int64(s, 2),
            .churned = sqlite3_column_int64(s, 3),
            .reactivated = sqlite3_column_int64(s, 4),
        };
        fn(&row, arg);
        n++;
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE)
        return db_fail(st, err, rc, "comparing holdout groups");
    return n;
}

int cad_store_touch_counts_foreach(cad_store_t *st,
                                   void (*fn)(const char *state, const char *channel, int64_t count,
                                              void *arg),
                                   void *arg, char *err)
{
    return foreach_text_text_int(st, stmt(st, S_TOUCH_COUNTS), fn, arg, "counting touches", err);
}

int cad_store_delivery_latency(cad_store_t *st, cad_time_t since, const double *bounds, int n,
                               int64_t *counts, double *sum, char *err)
{
    sqlite3_stmt *s = stmt(st, S_DELIVERY_LATENCY);
    sqlite3_bind_int64(s, 1, since);
    for (int i = 0; i <= n; i++)
        counts[i] = 0;
    *sum = 0;
    int total = 0, rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        double v = (double)sqlite3_column_int64(s, 0);
        int b = 0;
        while (b < n && v > bounds[b])
            b++;
        counts[b]++;
        *sum += v;
        total++;
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE)
        return db_fail(st, err, rc, "measuring delivery latency");
    return total;
}
