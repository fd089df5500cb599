-- A cadenced store at schema version 1 (before alerts and the due-touch
-- index of version 2), with a little data, for the migration test.
BEGIN;
CREATE TABLE customers (
   key INTEGER PRIMARY KEY,
   id TEXT NOT NULL UNIQUE,
   name TEXT NOT NULL DEFAULT '',
   timezone TEXT NOT NULL DEFAULT 'UTC',
   stage TEXT NOT NULL DEFAULT 'prospect',
   segment TEXT NOT NULL DEFAULT 'default',
   interests TEXT NOT NULL DEFAULT '',
   attributes TEXT NOT NULL DEFAULT '{}',
   paused INTEGER NOT NULL DEFAULT 0,
   created_at INTEGER NOT NULL,
   updated_at INTEGER NOT NULL,
   next_eval INTEGER NOT NULL);
CREATE INDEX customers_next_eval ON customers(next_eval);
CREATE TABLE contacts (
   key INTEGER PRIMARY KEY,
   id TEXT NOT NULL UNIQUE,
   customer_key INTEGER NOT NULL REFERENCES customers(key) ON DELETE CASCADE,
   name TEXT NOT NULL DEFAULT '',
   first_name TEXT NOT NULL DEFAULT '',
   roles TEXT NOT NULL DEFAULT '',
   email TEXT NOT NULL DEFAULT '',
   phone TEXT NOT NULL DEFAULT '');
CREATE INDEX contacts_customer ON contacts(customer_key);
CREATE TABLE consents (
   contact_key INTEGER NOT NULL REFERENCES contacts(key) ON DELETE CASCADE,
   kind TEXT NOT NULL,
   opted_in INTEGER NOT NULL,
   at INTEGER NOT NULL,
   source TEXT NOT NULL DEFAULT '',
   PRIMARY KEY (contact_key,
   kind));
CREATE TABLE contact_channels (
   contact_key INTEGER NOT NULL REFERENCES contacts(key) ON DELETE CASCADE,
   channel TEXT NOT NULL,
   reason TEXT NOT NULL DEFAULT '',
   at INTEGER NOT NULL,
   PRIMARY KEY (contact_key,
   channel));
CREATE TABLE suppressions (
   address TEXT PRIMARY KEY,
   reason TEXT NOT NULL DEFAULT '',
   at INTEGER NOT NULL);
CREATE TABLE events (
   key INTEGER PRIMARY KEY,
   id TEXT NOT NULL UNIQUE,
   customer_key INTEGER NOT NULL REFERENCES customers(key) ON DELETE CASCADE,
   type TEXT NOT NULL,
   at INTEGER NOT NULL,
   data TEXT NOT NULL DEFAULT '{}',
   received_at INTEGER NOT NULL);
CREATE INDEX events_customer_at ON events(customer_key, at);
CREATE TABLE touches (
   key INTEGER PRIMARY KEY,
   idempotency_key TEXT NOT NULL UNIQUE,
   customer_key INTEGER NOT NULL REFERENCES customers(key) ON DELETE CASCADE,
   rule TEXT NOT NULL,
   purpose TEXT NOT NULL,
   channel TEXT NOT NULL DEFAULT '',
   contact_key INTEGER REFERENCES contacts(key) ON DELETE SET NULL,
   content_id TEXT NOT NULL DEFAULT '',
   trigger_key INTEGER NOT NULL,
   state TEXT NOT NULL,
   attempt INTEGER NOT NULL DEFAULT 0,
   decided_at INTEGER NOT NULL,
   due_at INTEGER NOT NULL,
   expires_at INTEGER NOT NULL,
   updated_at INTEGER NOT NULL,
   last_error TEXT NOT NULL DEFAULT '',
   provider_id TEXT NOT NULL DEFAULT '');
CREATE INDEX touches_customer_decided ON touches(customer_key, decided_at);
CREATE TABLE traces (
   key INTEGER PRIMARY KEY,
   customer_key INTEGER NOT NULL REFERENCES customers(key) ON DELETE CASCADE,
   at INTEGER NOT NULL,
   rule TEXT NOT NULL,
   verdict TEXT NOT NULL,
   reason TEXT NOT NULL,
   sentence TEXT NOT NULL DEFAULT '',
   channel TEXT NOT NULL DEFAULT '',
   contact TEXT NOT NULL DEFAULT '',
   content TEXT NOT NULL DEFAULT '',
   until INTEGER NOT NULL DEFAULT 0);
CREATE INDEX traces_customer ON traces(customer_key, key);
CREATE TABLE counters (
   name TEXT PRIMARY KEY,
   value INTEGER NOT NULL);
INSERT INTO customers (key, id, name, timezone, stage, segment, interests, attributes, paused, created_at, updated_at, next_eval)
  VALUES (1, 'acme', 'Acme Ltd', 'Europe/London', 'active', 'enterprise', 'reporting,security', '{"plan":"gold"}', 0, 1700000000, 1700000000, 1700000000);
INSERT INTO contacts (key, id, customer_key, name, first_name, roles, email, phone)
  VALUES (1, 'acme-ann', 1, 'Ann Lee', 'Ann', 'decision_maker,champion', 'ann@acme.example', '+447700900001');
INSERT INTO consents (contact_key, kind, opted_in, at, source) VALUES (1, 'email', 1, 1700000000, 'signup form');
INSERT INTO events (key, id, customer_key, type, at, data, received_at)
  VALUES (1, 'acme-purchase-1', 1, 'purchase', 1700000000, '{}', 1700000000);
INSERT INTO touches (key, idempotency_key, customer_key, rule, purpose, channel, contact_key, content_id, trigger_key, state, attempt, decided_at, due_at, expires_at, updated_at)
  VALUES (1, 'acme/welcome_guide/e1', 1, 'welcome_guide', 'value', 'email', 1, '', 1, 'delivered', 1, 1700086400, 1700086400, 1700950400, 1700086500);
INSERT INTO traces (customer_key, at, rule, verdict, reason, sentence) VALUES (1, 1700086400, 'welcome_guide', 'send', 'due', 'Sent: every check passed.');
INSERT INTO counters (name, value) VALUES ('decisions', 1);
PRAGMA user_version = 1;
COMMIT;
