/*
 * fuzz_import_jsonl.c — the JSON Lines importer (loader.h); see fuzz_import.h.
 */
#define FUZZ_IMPORT_FORMAT CAD_IMPORT_JSONL
#include "fuzz_import.h"
