/*
 * plugin_object.h — the shared objects behind channel plugins.
 *
 * The dynamic linker knows a loaded object by its path: dlopen() of a path
 * already loaded returns the object in memory, even when the file was
 * replaced by a new build since. A reload builds its plugin host while the
 * previous one still runs, so a plain dlopen() would never pick up a new
 * build (and one overwritten in place would be read through stale tables).
 * This module remembers what each path was (device, inode, size and
 * modification time) when it was loaded: an unchanged file shares the
 * loaded object; a changed one is loaded fresh from a private copy made in
 * a directory of the daemon's own (the copy is unlinked at once).
 *
 * Objects are opened and closed on one thread (the event loop, or the
 * main thread of a check); nothing here locks.
 */
#ifndef CADENCE_PLUGIN_OBJECT_H
#define CADENCE_PLUGIN_OBJECT_H

#include <stddef.h>

typedef struct cad_plugin_object cad_plugin_object_t;

/* Opens the shared object at `path` (RTLD_NOW | RTLD_LOCAL). `copy_dir`
 * (may be NULL: then a changed file cannot be loaded fresh, an error) is
 * where the private copy of a changed file is made. Returns the object, to
 * be released with cad_plugin_object_close, or NULL with a sentence in
 * `err` naming the path. */
cad_plugin_object_t *cad_plugin_object_open(const char *path, const char *copy_dir, char *err,
                                            size_t err_size);

/* The dlopen() handle, for dlsym(); owned by the object. */
void *cad_plugin_object_handle(const cad_plugin_object_t *o);

/* Releases one open; the object is unloaded when its last user closes it.
 * NULL is ignored. */
void cad_plugin_object_close(cad_plugin_object_t *o);

#endif
