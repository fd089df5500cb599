/*
 * file.c — the file channel: every touch becomes one file in a directory.
 *
 * It is the embedded default channel for previews and demos: nothing leaves
 * the machine, yet each touch is a complete artefact an operator can open.
 * Channels whose address kind is email get `<name>.eml`, a real RFC 5322
 * message built by the email channel's own builder (../shared/
 * email_message.c), so it has the very headers a sent message has (RFC 2047
 * subjects and names, folded lines, List-Unsubscribe from the same
 * unsubscribe settings, Message-ID from the key); other channels get
 * `<name>.json`, the same document the webhook plugin posts. <name> is the
 * touch's idempotency key escaped one-to-one (key_file_name), cut and
 * suffixed with a digest when long, so two touches never share a file.
 *
 * Writes are atomic and idempotent: the file is written to a temporary name
 * in the same directory, fsync()ed, rename()d over the final name and the
 * directory fsync()ed, so a reader never sees half a file and a touch sent
 * twice (after a crash) overwrites itself. The work is blocking file I/O, so
 * the plugin declares send(), which the host runs on the libuv thread pool.
 */
#include "email_message.h"

#include <cadence/channel.h>

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Bytes of the escaped key in a file name: with ".json" and the temporary's
 * "." and ".XXXXXX" well within NAME_MAX (255). */
#define NAME_KEY_MAX 200

typedef struct file_plugin {
    const cad_plugin_api_t *api;
    cad_plugin_env_t *env;
    char *dir;
    char from_name[256];
    char from_address[256];
    bool eml;
} file_plugin_t;

typedef struct sbuf {
    char *data;
    size_t len, cap;
    bool failed;
} sbuf_t;

static void sb_add(sbuf_t *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->data, cap);
        if (!p) {
            b->failed = true;
            return;
        }
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void sb_str(sbuf_t *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

/* The file name of a key, without its extension, into `out`: bytes of
 * [A-Za-z0-9.-] as they are (but a leading '.'), every other byte, '_'
 * included, as "_xx" (lower-case hex), so the mapping is one-to-one and two
 * keys never share a file. An escaped key longer than NAME_KEY_MAX is cut at
 * an escape's boundary and ends in '~' and the first 32 hex digits of the
 * whole key's SHA-256: '~' never comes out of the escape, so such a name
 * cannot equal a short key's, and two long keys share one only if their
 * digests do. */
static void key_file_name(const char *key, char out[NAME_KEY_MAX + 1])
{
    static const char hex[] = "0123456789abcdef";
    const size_t hashed_cut = NAME_KEY_MAX - 33; /* room for '~' and the digest */
    size_t n = 0, cut = 0;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        bool plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                     (*p >= '0' && *p <= '9') || *p == '-' ||
                     (*p == '.' && p != (const unsigned char *)key);
        if (n + (plain ? 1 : 3) > NAME_KEY_MAX) {
            char digest[33];
            cad_email_key_digest(key, digest);
            out[cut] = '~';
            memcpy(out + cut + 1, digest, sizeof digest);
            return;
        }
        if (plain) {
            out[n++] = (char)*p;
        } else {
            out[n++] = '_';
            out[n++] = hex[*p >> 4];
            out[n++] = hex[*p & 15];
        }
        if (n <= hashed_cut)
            cut = n;
    }
    if (n == 0)
        out[n++] = '_'; /* no key is empty; "_" alone is no escape */
    out[n] = '\0';
}

/* The .eml of a touch, built by the email channel's own message builder
 * (../shared/email_message.c): the same RFC 2047 subjects and names, folded
 * headers, quoted-printable parts and Message-ID as a sent message. */
static int build_eml(file_plugin_t *fp, const cad_plugin_touch_t *t, cad_email_buf_t *b,
                     cad_plugin_outcome_t *out)
{
    if (!*t->contact.email) {
        out->kind = CAD_OUTCOME_PERMANENT;
        snprintf(out->reason, sizeof out->reason, "contact %s has no email address", t->contact.id);
        return -1;
    }
    const char *subject = *t->subject ? t->subject : t->content.title;
    cad_email_message_t msg = {
        .from_address = fp->from_address,
        .from_name = fp->from_name,
        .to_address = t->contact.email,
        .to_name = t->contact.name,
        .subject = *subject ? subject : "(no subject)",
        .text = *t->text || *t->html ? t->text : "\n",
        .html = t->html,
        .idempotency_key = t->idempotency_key,
        .unsubscribe_url = t->unsubscribe_url,
        .unsubscribe_mailto = t->unsubscribe_mailto,
        .date = (time_t)fp->api->now(),
        .rule = t->rule,
        .purpose = t->purpose,
    };
    char err[CAD_EMAIL_ERRBUF];
    if (cad_email_build(&msg, b, err) < 0) {
        out->kind = CAD_OUTCOME_PERMANENT;
        snprintf(out->reason, sizeof out->reason, "%s", err);
        return -1;
    }
    return 0;
}

static void iso_time(int64_t t, char *buf, size_t size)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int build_json(const cad_plugin_touch_t *t, sbuf_t *b, cad_plugin_outcome_t *out)
{
    json_error_t jerr;
    json_t *attrs = json_loads(t->customer.attributes, 0, &jerr);
    if (!attrs)
        attrs = json_object();
    char decided[32];
    iso_time(t->decided_at, decided, sizeof decided);
    json_t *doc = json_pack(
        "{s:s, s:s, s:{s:I, s:s, s:i, s:{s:s, s:s, s:o}, s:{s:s, s:s, s:s, s:s, s:s}, s:s, s:s, "
        "s:s, s:{s:s, s:s, s:s}, s:{s:s, s:s, s:s}, s:{s:s, s:s}, s:s}}",
        "type", "touch.decided", "timestamp", decided, "data", "touch_id", (json_int_t)t->touch_id,
        "idempotency_key", t->idempotency_key, "attempt", t->attempt, "customer", "id",
        t->customer.id, "name", t->customer.name, "attributes", attrs, "contact", "id",
        t->contact.id, "name", t->contact.name, "first_name", t->contact.first_name, "email",
        t->contact.email, "phone", t->contact.phone, "rule", t->rule, "purpose", t->purpose,
        "channel", t->channel, "content", "id", t->content.id, "title", t->content.title, "url",
        t->content.url, "message", "subject", t->subject, "text", t->text, "html", t->html,
        "unsubscribe", "url", t->unsubscribe_url, "mailto", t->unsubscribe_mailto, "decided_at",
        decided);
    char *text = doc ? json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
    json_decref(doc);
    if (!text) {
        out->kind = CAD_OUTCOME_PERMANENT;
        snprintf(out->reason, sizeof out->reason,
                 "cannot encode touch %lld as JSON (a field is not valid UTF-8)",
                 (long long)t->touch_id);
        return -1;
    }
    sb_str(b, text);
    sb_str(b, "\n");
    free(text);
    return 0;
}

/* Writes data to dir/name atomically; 0 or an errno value, with `step`
 * naming the failing operation. */
static int write_atomic(const char *dir, const char *name, const char *data, size_t len,
                        const char **step)
{
    char tmp[4096], final[4096];
    snprintf(final, sizeof final, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s/.%s.XXXXXX", dir, name);
    *step = "create";
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0)
        return errno;
    size_t off = 0;
    int e = 0;
    *step = "write";
    while (off < len) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            e = errno;
            break;
        }
        off += (size_t)w;
    }
    if (!e && fchmod(fd, 0640) < 0)
        e = errno, *step = "chmod";
    if (!e && fsync(fd) < 0)
        e = errno, *step = "fsync";
    if (close(fd) < 0 && !e)
        e = errno, *step = "close";
    if (!e && rename(tmp, final) < 0)
        e = errno, *step = "rename";
    if (e) {
        unlink(tmp);
        return e;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        if (fsync(dfd) < 0)
            e = errno, *step = "fsync directory";
        close(dfd);
    }
    return e;
}

static void file_send(void *instance, const cad_plugin_touch_t *t, cad_plugin_outcome_t *out)
{
    file_plugin_t *fp = instance;
    char key[NAME_KEY_MAX + 1], name[NAME_KEY_MAX + 8];
    key_file_name(t->idempotency_key, key);
    snprintf(name, sizeof name, "%s.%s", key, fp->eml ? "eml" : "json");
    cad_email_buf_t eml = {0};
    sbuf_t json = {0};
    int rc = fp->eml ? build_eml(fp, t, &eml, out) : build_json(t, &json, out);
    if (rc < 0) {
        cad_email_buf_free(&eml);
        free(json.data);
        return;
    }
    if (json.failed) {
        free(json.data);
        out->kind = CAD_OUTCOME_RETRY;
        snprintf(out->reason, sizeof out->reason, "out of memory building %s", name);
        return;
    }
    const char *step = "";
    int e = fp->eml ? write_atomic(fp->dir, name, eml.data, eml.len, &step)
                    : write_atomic(fp->dir, name, json.data, json.len, &step);
    cad_email_buf_free(&eml);
    free(json.data);
    if (e) {
        out->kind = CAD_OUTCOME_RETRY;
        snprintf(out->reason, sizeof out->reason, "cannot %s %s/%s: %s", step, fp->dir, name,
                 strerror(e));
        return;
    }
    out->kind = CAD_OUTCOME_DELIVERED;
    snprintf(out->provider_id, sizeof out->provider_id, "%s", name);
}

/* mkdir -p */
static int make_dirs(char *path)
{
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        int r = mkdir(path, 0750);
        *p = '/';
        if (r < 0 && errno != EEXIST)
            return -1;
    }
    if (mkdir(path, 0750) < 0 && errno != EEXIST)
        return -1;
    struct stat st;
    if (stat(path, &st) < 0)
        return -1;
    if (!S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    return 0;
}

static int file_init(const cad_plugin_api_t *api, cad_plugin_env_t *env, void **instance, char *err,
                     size_t err_size)
{
    const char *dir = api->option(env, "directory");
    const char *from = api->option(env, "from");
    if (!dir || !*dir) {
        snprintf(err, err_size, "option directory is empty");
        return -1;
    }
    char why[CAD_EMAIL_ERRBUF];
    const char *unsubscribe_url = api->option(env, "unsubscribe_url");
    if (unsubscribe_url && *unsubscribe_url && strncmp(unsubscribe_url, "https://", 8) != 0) {
        snprintf(err, err_size, "option unsubscribe_url \"%s\" must start with https:// (RFC 8058)",
                 unsubscribe_url);
        return -1;
    }
    file_plugin_t *fp = calloc(1, sizeof *fp);
    if (!fp) {
        snprintf(err, err_size, "out of memory");
        return -1;
    }
    fp->api = api;
    fp->env = env;
    fp->eml = api->address_kind(env) == CAD_PLUGIN_ADDRESS_EMAIL;
    /* Only an .eml has a From: a .json channel ignores the setting. */
    if (fp->eml && cad_email_parse_mailbox("from", from ? from : "", fp->from_name,
                                           fp->from_address, sizeof fp->from_name, why) < 0) {
        snprintf(err, err_size, "option %s", why);
        free(fp);
        return -1;
    }
    size_t len = strlen(api->state_dir(env)) + strlen(dir) + 2;
    fp->dir = malloc(len);
    if (!fp->dir) {
        free(fp);
        snprintf(err, err_size, "out of memory");
        return -1;
    }
    if (dir[0] == '/')
        snprintf(fp->dir, len, "%s", dir);
    else
        snprintf(fp->dir, len, "%s/%s", api->state_dir(env), dir);
    bool checking = api->abi_minor >= 1 && api->checking(env);
    if (!checking && make_dirs(fp->dir) < 0) {
        snprintf(err, err_size, "cannot create directory %s: %s", fp->dir, strerror(errno));
        free(fp->dir);
        free(fp);
        return -1;
    }
    if (!checking)
        api->log(env, CAD_PLUGIN_LOG_INFO, "writing touches as %s files dir=%s",
                 fp->eml ? ".eml" : ".json", fp->dir);
    *instance = fp;
    return 0;
}

static void file_shutdown(void *instance)
{
    file_plugin_t *fp = instance;
    free(fp->dir);
    free(fp);
}

static const cad_plugin_option_t file_options[] = {
    {"directory", CAD_OPTION_STRING, "outbox", false,
     "where touch files go; relative to the state directory; created if missing"},
    {"from", CAD_OPTION_STRING, "cadenced <cadenced@localhost>", false,
     "From of .eml files: address or \"Name <address>\""},
    {"unsubscribe_url", CAD_OPTION_STRING, NULL, false,
     "https:// one-click unsubscribe URL template for List-Unsubscribe, as the email plugin's"},
    {"unsubscribe_mailto", CAD_OPTION_STRING, NULL, false,
     "unsubscribe address template for List-Unsubscribe, as the email plugin's"},
    {NULL, 0, NULL, false, NULL},
};

CAD_PLUGIN_EXPORT const cad_plugin_descriptor_t cadence_channel_plugin = {
    .abi_major = CAD_PLUGIN_ABI_MAJOR,
    .abi_minor = CAD_PLUGIN_ABI_MINOR,
    .struct_size = sizeof(cad_plugin_descriptor_t),
    .name = "file",
    .description = "writes each touch atomically as an .eml or .json file (previews, demos)",
    .version = "1.0",
    .options = file_options,
    .init = file_init,
    .send = file_send,
    .shutdown = file_shutdown,
};
