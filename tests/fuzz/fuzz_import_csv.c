/*
 * fuzz_import_csv.c — the CSV importer (loader.h); see fuzz_import.h.
 */
#define FUZZ_IMPORT_FORMAT CAD_IMPORT_CSV
#include "fuzz_import.h"
