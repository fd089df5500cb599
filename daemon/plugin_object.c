/*
 * plugin_object.c — loads plugin shared objects so that a replaced file is
 * loaded fresh (see plugin_object.h).
 */
#include "plugin_object.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct cad_plugin_object {
    char *path;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
    void *dl;
    int users;
    struct cad_plugin_object *next;
};

/* Every object loaded and not yet unloaded, newest first. */
static cad_plugin_object_t *loaded;

/* Is the file now (`st`) the one `o` was loaded from? */
static bool same_file(const cad_plugin_object_t *o, const struct stat *st)
{
    return o->dev == st->st_dev && o->ino == st->st_ino && o->size == st->st_size &&
           o->mtime.tv_sec == st->st_mtim.tv_sec && o->mtime.tv_nsec == st->st_mtim.tv_nsec;
}

/* Copies `path` to a new file in `dir`, loads that and unlinks it: a path
 * the dynamic linker has never seen, so it maps the new build. */
static void *open_copy(const char *path, const char *dir, char *err, size_t err_size)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t len = strlen(dir) + strlen(base) + 32;
    char *copy = malloc(len);
    if (!copy) {
        snprintf(err, err_size, "cannot load plugin %s: out of memory", path);
        return NULL;
    }
    snprintf(copy, len, "%s/.%s.XXXXXX", dir, base);
    void *dl = NULL;
    int in = open(path, O_RDONLY | O_CLOEXEC);
    int out = in < 0 ? -1 : mkostemp(copy, O_CLOEXEC);
    if (in < 0 || out < 0) {
        snprintf(err, err_size, "cannot load the new build of plugin %s: %s %s: %s", path,
                 in < 0 ? "cannot read" : "cannot copy it into", in < 0 ? path : dir,
                 strerror(errno));
        goto done;
    }
    char buf[65536];
    ssize_t n;
    bool failed = false;
    off_t copied = 0;
    while (!failed && (n = read(in, buf, sizeof buf)) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        failed = n < 0;
        for (ssize_t off = 0; !failed && off < n;) {
            ssize_t w = write(out, buf + off, (size_t)(n - off));
            if (w < 0 && errno == EINTR)
                continue;
            failed = w <= 0;
            off += w > 0 ? w : 0;
            copied += w > 0 ? w : 0;
        }
    }
    /* A short copy (a full disk) must never be mapped: it would crash. */
    struct stat st;
    if (!failed && (fstat(in, &st) != 0 || st.st_size != copied)) {
        failed = true;
        errno = EIO;
    }
    if (failed) {
        snprintf(err, err_size, "cannot load the new build of plugin %s: copying it into %s: %s",
                 path, dir, errno ? strerror(errno) : "short write");
        goto done;
    }
    dl = dlopen(copy, RTLD_NOW | RTLD_LOCAL);
    if (!dl) {
        const char *e = dlerror();
        snprintf(err, err_size, "cannot load plugin %s: %s", path, e ? e : "unknown error");
    }
done:
    if (out >= 0) {
        close(out);
        unlink(copy);
    }
    if (in >= 0)
        close(in);
    free(copy);
    return dl;
}

cad_plugin_object_t *cad_plugin_object_open(const char *path, const char *copy_dir, char *err,
                                            size_t err_size)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        snprintf(err, err_size, "cannot load plugin %s: %s", path, strerror(errno));
        return NULL;
    }
    for (cad_plugin_object_t *o = loaded; o; o = o->next)
        if (strcmp(o->path, path) == 0 && same_file(o, &st)) {
            o->users++;
            return o;
        }
    cad_plugin_object_t *o = calloc(1, sizeof *o);
    if (!o || !(o->path = strdup(path))) {
        free(o);
        snprintf(err, err_size, "cannot load plugin %s: out of memory", path);
        return NULL;
    }
    /* Is an older build of this path still in memory? Then dlopen(path)
     * would return it. */
    void *resident = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
    if (resident) {
        dlclose(resident);
        if (!copy_dir) {
            snprintf(err, err_size,
                     "plugin %s changed since it was loaded; a restart loads the new build", path);
            free(o->path);
            free(o);
            return NULL;
        }
        o->dl = open_copy(path, copy_dir, err, err_size);
    } else {
        o->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        if (!o->dl) {
            const char *e = dlerror();
            snprintf(err, err_size, "cannot load plugin %s: %s", path, e ? e : "unknown error");
        }
    }
    if (!o->dl) {
        free(o->path);
        free(o);
        return NULL;
    }
    o->dev = st.st_dev;
    o->ino = st.st_ino;
    o->size = st.st_size;
    o->mtime = st.st_mtim;
    o->users = 1;
    o->next = loaded;
    loaded = o;
    return o;
}

void *cad_plugin_object_handle(const cad_plugin_object_t *o)
{
    return o->dl;
}

void cad_plugin_object_close(cad_plugin_object_t *o)
{
    if (!o || --o->users > 0)
        return;
    for (cad_plugin_object_t **p = &loaded; *p; p = &(*p)->next)
        if (*p == o) {
            *p = o->next;
            break;
        }
    dlclose(o->dl);
    free(o->path);
    free(o);
}
