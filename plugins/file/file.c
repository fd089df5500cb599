/*
 * file.c — the file channel: every touch becomes one file in a directory.
 *
 * It is the embedded default channel for previews and demos: nothing leaves
 * the machine, yet each touch is a complete artefact an operator can open.
 * Channels whose address kind is email get `<key>.eml`, a real RFC 5322
 * message (From, To, Subject, Date, Message-ID, List-Unsubscribe, and a
 * multipart/alternative text+html body); other channels get `<key>.json`,
 * the same document the webhook plugin posts. <key> is the touch's
 * idempotency key with every byte outside [A-Za-z0-9._-] replaced by '_'.
 *
 * Writes are atomic and idempotent: the file is written to a temporary name
 * in the same directory, fsync()ed, rename()d over the final name and the
 * directory fsync()ed, so a reader never sees half a file and a touch sent
 * twice (after a crash) overwrites itself. The work is blocking file I/O, so
 * the plugin declares send(), which the host runs on the libuv thread pool.
 */
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

#define KEY_MAX         200
#define LINE_MAX_OCTETS 998

typedef struct file_plugin {
    const cad_plugin_api_t *api;
    cad_plugin_env_t *env;
    char *dir;
    char *from;
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

static void sb_base64(sbuf_t *b, const unsigned char *in, size_t n, bool wrap)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t col = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16;
        if (i + 1 < n)
            v |= (unsigned)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        char q[4] = {tbl[(v >> 18) & 63], tbl[(v >> 12) & 63], i + 1 < n ? tbl[(v >> 6) & 63] : '=',
                     i + 2 < n ? tbl[v & 63] : '='};
        sb_add(b, q, 4);
        col += 4;
        if (wrap && col >= 76) {
            sb_str(b, "\r\n");
            col = 0;
        }
    }
    if (wrap && col)
        sb_str(b, "\r\n");
}

/* A header value as is when it is printable ASCII, else one RFC 2047
 * encoded-word (which also neutralises CR/LF). */
static void sb_header_text(sbuf_t *b, const char *s)
{
    bool plain = true;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p > 0x7e)
            plain = false;
    if (plain) {
        sb_str(b, s);
        return;
    }
    sb_str(b, "=?UTF-8?B?");
    sb_base64(b, (const unsigned char *)s, strlen(s), false);
    sb_str(b, "?=");
}

/* A display name: an encoded-word when not printable ASCII, a quoted string
 * when it holds RFC 5322 specials, else as is. */
static void sb_display_name(sbuf_t *b, const char *s)
{
    bool plain = true, special = false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p < 0x20 || *p > 0x7e)
            plain = false;
        else if (strchr("()<>[]:;@\\,.\"", *p))
            special = true;
    }
    if (!plain || !special) {
        sb_header_text(b, s);
        return;
    }
    sb_str(b, "\"");
    for (const char *p = s; *p; p++) {
        if (*p == '"' || *p == '\\')
            sb_str(b, "\\");
        sb_add(b, p, 1);
    }
    sb_str(b, "\"");
}

static bool has_crlf(const char *s)
{
    return strpbrk(s, "\r\n") != NULL;
}

/* Body text with CRLF line ends; 8bit unless a line is too long for SMTP,
 * then base64. */
static void sb_body_part(sbuf_t *b, const char *type, const char *text)
{
    bool long_line = false;
    size_t run = 0;
    for (const char *p = text; *p; p++) {
        run = (*p == '\n') ? 0 : run + 1;
        if (run > LINE_MAX_OCTETS)
            long_line = true;
    }
    sb_str(b, "Content-Type: ");
    sb_str(b, type);
    sb_str(b, "; charset=utf-8\r\n");
    if (long_line) {
        sb_str(b, "Content-Transfer-Encoding: base64\r\n\r\n");
        sb_base64(b, (const unsigned char *)text, strlen(text), true);
        return;
    }
    sb_str(b, "Content-Transfer-Encoding: 8bit\r\n\r\n");
    for (const char *p = text; *p; p++) {
        if (*p == '\r')
            continue;
        if (*p == '\n')
            sb_str(b, "\r\n");
        else
            sb_add(b, p, 1);
    }
    sb_str(b, "\r\n");
}

static void sanitize_key(const char *key, char *out, size_t size)
{
    size_t n = 0;
    for (const char *p = key; *p && n + 1 < size && n < KEY_MAX; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_' || (c == '.' && n > 0);
        out[n++] = ok ? c : '_';
    }
    if (n == 0)
        out[n++] = '_';
    out[n] = '\0';
}

static int build_eml(file_plugin_t *fp, const cad_plugin_touch_t *t, const char *key, sbuf_t *b,
                     cad_plugin_outcome_t *out)
{
    if (!*t->contact.email || has_crlf(t->contact.email) || strpbrk(t->contact.email, "<>\"")) {
        out->kind = CAD_OUTCOME_PERMANENT;
        snprintf(out->reason, sizeof out->reason, "contact %s has no usable email address",
                 t->contact.id);
        return -1;
    }
    char date[64];
    time_t now = (time_t)fp->api->now();
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
    char boundary[96];
    snprintf(boundary, sizeof boundary, "=_cadence_%s", key);

    sb_str(b, "From: ");
    sb_str(b, fp->from);
    sb_str(b, "\r\nTo: ");
    if (*t->contact.name) {
        sb_display_name(b, t->contact.name);
        sb_str(b, " ");
    }
    sb_str(b, "<");
    sb_str(b, t->contact.email);
    sb_str(b, ">\r\nSubject: ");
    sb_header_text(b, t->subject);
    sb_str(b, "\r\nDate: ");
    sb_str(b, date);
    sb_str(b, "\r\nMessage-ID: <");
    sb_str(b, key);
    sb_str(b, "@cadenced.invalid>\r\nMIME-Version: 1.0\r\n");
    if ((*t->unsubscribe_url && !has_crlf(t->unsubscribe_url)) ||
        (*t->unsubscribe_mailto && !has_crlf(t->unsubscribe_mailto))) {
        sb_str(b, "List-Unsubscribe: ");
        bool first = true;
        if (*t->unsubscribe_url && !has_crlf(t->unsubscribe_url)) {
            sb_str(b, "<");
            sb_str(b, t->unsubscribe_url);
            sb_str(b, ">");
            first = false;
        }
        if (*t->unsubscribe_mailto && !has_crlf(t->unsubscribe_mailto)) {
            sb_str(b, first ? "<" : ", <");
            if (strncmp(t->unsubscribe_mailto, "mailto:", 7) != 0)
                sb_str(b, "mailto:");
            sb_str(b, t->unsubscribe_mailto);
            sb_str(b, ">");
        }
        sb_str(b, "\r\n");
        if (*t->unsubscribe_url)
            sb_str(b, "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n");
    }
    sb_str(b, "X-Cadence-Rule: ");
    sb_header_text(b, t->rule);
    sb_str(b, "\r\nX-Cadence-Purpose: ");
    sb_header_text(b, t->purpose);
    sb_str(b, "\r\n");
    if (!*t->html) {
        sb_body_part(b, "text/plain", t->text);
        return 0;
    }
    sb_str(b, "Content-Type: multipart/alternative; boundary=\"");
    sb_str(b, boundary);
    sb_str(b, "\"\r\n\r\nThis is a multi-part message in MIME format.\r\n\r\n--");
    sb_str(b, boundary);
    sb_str(b, "\r\n");
    sb_body_part(b, "text/plain", t->text);
    sb_str(b, "--");
    sb_str(b, boundary);
    sb_str(b, "\r\n");
    sb_body_part(b, "text/html", t->html);
    sb_str(b, "--");
    sb_str(b, boundary);
    sb_str(b, "--\r\n");
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
    char key[KEY_MAX + 1], name[KEY_MAX + 8];
    sanitize_key(t->idempotency_key, key, sizeof key);
    snprintf(name, sizeof name, "%s.%s", key, fp->eml ? "eml" : "json");
    sbuf_t b = {0};
    int rc = fp->eml ? build_eml(fp, t, key, &b, out) : build_json(t, &b, out);
    if (rc < 0) {
        free(b.data);
        return;
    }
    if (b.failed) {
        free(b.data);
        out->kind = CAD_OUTCOME_RETRY;
        snprintf(out->reason, sizeof out->reason, "out of memory building %s", name);
        return;
    }
    const char *step = "";
    int e = write_atomic(fp->dir, name, b.data, b.len, &step);
    free(b.data);
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
    if (!from || has_crlf(from)) {
        snprintf(err, err_size, "option from must be one line");
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
    fp->from = strdup(from);
    size_t len = strlen(api->state_dir(env)) + strlen(dir) + 2;
    fp->dir = malloc(len);
    if (!fp->from || !fp->dir) {
        free(fp->from);
        free(fp->dir);
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
        free(fp->from);
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
    free(fp->from);
    free(fp);
}

static const cad_plugin_option_t file_options[] = {
    {"directory", CAD_OPTION_STRING, "outbox", false,
     "where touch files go; relative to the state directory; created if missing"},
    {"from", CAD_OPTION_STRING, "cadenced <cadenced@localhost>", false,
     "From header of .eml files"},
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
