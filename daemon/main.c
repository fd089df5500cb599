/*
 * main.c — cadenced's entry point: parse the command line, then hand over to
 * daemon.c. Wiring only; every decision lives in a module.
 *
 * Exit status: 0 after an orderly stop (or a valid --check), 1 when the
 * daemon cannot start or the config is invalid, 2 for a usage error.
 */
#include "commands.h"
#include "config.h"
#include "daemon.h"
#include "loader.h"
#include "log.h"
#include "plugin_host.h"
#include "simulate.h"
#include "store.h"
#include "tz.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_CONFIG "/etc/cadence/cadenced.conf"

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: cadenced [OPTIONS]\n"
            "Keeps a cadence calendar for every customer and sends each touchpoint when it is\n"
            "due, through channel plugins. Runs in the foreground (systemd Type=notify).\n"
            "\n"
            "Options:\n"
            "  -c, --config FILE      configuration file (default " DEFAULT_CONFIG ")\n"
            "      --check            load and validate the configuration and the channel\n"
            "                         plugins' settings, then exit: 0 when valid, 1 with\n"
            "                         FILE:LINE: errors on stderr\n"
            "      --state-dir DIR    where cadence.db lives (overrides $STATE_DIRECTORY and\n"
            "                         store.state_dir)\n"
            "      --socket PATH      control socket (overrides $RUNTIME_DIRECTORY/control.sock\n"
            "                         and control.socket)\n"
            "      --plugin-dir DIR   where the channel plugins are (overrides plugins.dir)\n"
            "      --log-level LEVEL  err, warning, notice, info or debug (overrides log.level)\n"
            "      --import KIND FILE load customers, contacts or events from FILE (JSONL, or\n"
            "                         CSV with a header row) into the store, then exit; bad\n"
            "                         rows are reported as FILE:LINE: and skipped\n"
            "      --simulate DAYS    forecast the next DAYS days of touches with the live\n"
            "                         engine over a copy of the store, sending nothing\n"
            "      --customer ID      with --simulate: only this customer\n"
            "      --json             with --simulate: one JSON object per line\n"
            "  -V, --version          print the version and exit\n"
            "  -h, --help             print this help and exit\n"
            "\n"
            "Signals: SIGHUP reloads the configuration (an invalid one is logged and the\n"
            "running one kept); SIGTERM and SIGINT drain in-flight work and exit.\n");
}

enum {
    OPT_CHECK = 256,
    OPT_STATE_DIR,
    OPT_SOCKET,
    OPT_PLUGIN_DIR,
    OPT_LOG_LEVEL,
    OPT_IMPORT,
    OPT_SIMULATE,
    OPT_CUSTOMER,
    OPT_JSON,
};

static void print_reject(const char *message, void *arg)
{
    (void)arg;
    fprintf(stderr, "%s\n", message);
}

/* --import KIND FILE: one-shot bulk load through the loader, then exit. */
static int import_file(const cad_daemon_options_t *opts, const char *kind_name, const char *path)
{
    int kind = cad_import_kind_parse(kind_name);
    if (kind < 0) {
        fprintf(stderr, "cadenced: --import: unknown kind \"%s\" (customers, contacts, events)\n",
                kind_name);
        return 2;
    }
    int format = cad_import_format_from_path(path);
    if (format < 0)
        format = CAD_IMPORT_JSONL;
    char err[CAD_ERRBUF] = "";
    cad_config_t *cfg = NULL;
    if (cad_daemon_prepare_config(opts, &cfg, err) != 0) {
        fprintf(stderr, "cadenced: %s\n", err);
        return 1;
    }
    FILE *in = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    if (!in) {
        fprintf(stderr, "cadenced: --import: cannot open %s: %s\n", path, strerror(errno));
        cad_config_free(cfg);
        return 1;
    }
    char db[4200];
    snprintf(db, sizeof(db), "%s/cadence.db", cfg->state_dir);
    cad_store_t *st = NULL;
    int status = 1;
    if (cad_store_open(db, cfg->sync, &st, err) == 0) {
        cad_import_options_t io = {
            .kind = (enum cad_import_kind)kind,
            .format = (enum cad_import_format)format,
            .source = path,
            .now = (cad_time_t)time(NULL),
            .on_reject = print_reject,
        };
        cad_import_report_t rep;
        if (cad_import(st, &cfg->playbook, in, &io, &rep, err) == 0) {
            printf("%s: %lld %s accepted, %lld rejected, %lld duplicates\n", path,
                   (long long)rep.accepted, cad_import_kind_name((enum cad_import_kind)kind),
                   (long long)rep.rejected, (long long)rep.duplicates);
            status = rep.rejected ? 1 : 0;
        } else {
            fprintf(stderr, "cadenced: --import %s: %s\n", path, err);
        }
        cad_store_close(st);
    } else {
        fprintf(stderr, "cadenced: %s\n", err);
    }
    if (in != stdin)
        fclose(in);
    cad_config_free(cfg);
    cad_tz_registry_free();
    return status;
}

/* --simulate DAYS: the forecast over a copy of the store, then exit. */
static int simulate(const cad_daemon_options_t *opts, const char *days_text, const char *customer,
                    bool json)
{
    char *end = NULL;
    long days = strtol(days_text, &end, 10);
    if (!end || *end || days < 1 || days > 3650) {
        fprintf(stderr, "cadenced: --simulate: days must be a number from 1 to 3650, not \"%s\"\n",
                days_text);
        return 2;
    }
    char err[CAD_ERRBUF] = "";
    cad_config_t *cfg = NULL;
    if (cad_daemon_prepare_config(opts, &cfg, err) != 0) {
        fprintf(stderr, "cadenced: %s\n", err);
        return 1;
    }
    char db[4200];
    snprintf(db, sizeof(db), "%s/cadence.db", cfg->state_dir);
    cad_simulate_options_t so = {
        .db_path = db,
        .start = (cad_time_t)time(NULL),
        .days = (int)days,
        .customer_id = customer,
        .json = json,
    };
    int status = 0;
    if (cad_simulate_run(cfg, &so, stdout, NULL, err) != 0) {
        fprintf(stderr, "cadenced: --simulate: %s\n", err);
        status = 1;
    }
    cad_config_free(cfg);
    cad_tz_registry_free();
    return status;
}

/* --check: the configuration, then every channel's plugin (file, descriptor,
 * settings) when the plugin directory exists on this machine. */
static int check_config(const char *path, const char *plugin_dir)
{
    cad_config_t *cfg = NULL;
    if (cad_config_load(path, &cfg, stderr) != 0) {
        fprintf(stderr, "%s: the configuration is not valid\n", path);
        return 1;
    }
    if (plugin_dir) {
        char *copy = strdup(plugin_dir);
        if (!copy) {
            cad_config_free(cfg);
            fprintf(stderr, "cadenced: out of memory\n");
            return 1;
        }
        free(cfg->plugin_dir);
        cfg->plugin_dir = copy;
    }
    struct stat st;
    const char *dir = cfg->plugin_dir ? cfg->plugin_dir : CADENCE_PLUGIN_DIR;
    bool plugins_checked = stat(dir, &st) == 0 && S_ISDIR(st.st_mode);
    if (plugins_checked) {
        int failed = cad_plugin_host_check(cfg, stderr, stdout);
        if (failed > 0) {
            fprintf(stderr, "%s: %d channel%s would not load %s plugin%s\n", path, failed,
                    failed == 1 ? "" : "s", failed == 1 ? "its" : "their", failed == 1 ? "" : "s");
            cad_config_free(cfg);
            return 1;
        }
    }
    printf("%s: configuration OK (%d rules, %d channels)\n", path, cfg->playbook.n_rules,
           cfg->playbook.n_channels);
    if (!plugins_checked)
        printf("%s: plugins not checked: %s is not a directory here (--plugin-dir DIR)\n", path,
               dir);
    cad_config_free(cfg);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"config", required_argument, NULL, 'c'},
        {"check", no_argument, NULL, OPT_CHECK},
        {"state-dir", required_argument, NULL, OPT_STATE_DIR},
        {"socket", required_argument, NULL, OPT_SOCKET},
        {"plugin-dir", required_argument, NULL, OPT_PLUGIN_DIR},
        {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
        {"import", required_argument, NULL, OPT_IMPORT},
        {"simulate", required_argument, NULL, OPT_SIMULATE},
        {"customer", required_argument, NULL, OPT_CUSTOMER},
        {"json", no_argument, NULL, OPT_JSON},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    cad_daemon_options_t opts = {.config_path = DEFAULT_CONFIG, .log_level = -1};
    bool check = false, json = false;
    const char *import_kind = NULL, *simulate_days = NULL, *customer = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "c:Vh", options, NULL)) != -1) {
        switch (c) {
        case 'c': opts.config_path = optarg; break;
        case OPT_CHECK: check = true; break;
        case OPT_STATE_DIR: opts.state_dir = optarg; break;
        case OPT_SOCKET: opts.socket_path = optarg; break;
        case OPT_PLUGIN_DIR: opts.plugin_dir = optarg; break;
        case OPT_IMPORT: import_kind = optarg; break;
        case OPT_SIMULATE: simulate_days = optarg; break;
        case OPT_CUSTOMER: customer = optarg; break;
        case OPT_JSON: json = true; break;
        case OPT_LOG_LEVEL:
            opts.log_level = cad_log_level_parse(optarg);
            if (opts.log_level < 0) {
                fprintf(stderr,
                        "cadenced: --log-level: unknown level \"%s\" (err, warning, notice, "
                        "info, debug)\n",
                        optarg);
                return 2;
            }
            break;
        case 'V': printf("cadenced %s\n", CADENCE_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (import_kind) {
        if (optind + 1 != argc) {
            fprintf(stderr, "cadenced: --import KIND FILE: give exactly one FILE\n");
            return 2;
        }
        return import_file(&opts, import_kind, argv[optind]);
    }
    if ((customer || json) && !simulate_days) {
        fprintf(stderr, "cadenced: --customer and --json go with --simulate DAYS\n");
        return 2;
    }
    if (optind < argc) {
        fprintf(stderr, "cadenced: unexpected argument \"%s\"\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (check)
        return check_config(opts.config_path, opts.plugin_dir);
    if (simulate_days)
        return simulate(&opts, simulate_days, customer, json);

    cad_log_init(opts.log_level >= 0 ? (enum cad_log_level)opts.log_level : CAD_LOG_INFO);
    char err[CAD_ERRBUF] = "";
    cad_daemon_t *d = NULL;
    if (cad_daemon_new(&opts, &d, err) != 0) {
        cad_log_err("cadenced cannot start: %s", err);
        return 1;
    }
    cad_commands_t *commands = NULL;
    if (cad_commands_register(d, &commands, err) != 0) {
        cad_log_err("cadenced cannot start: %s", err);
        cad_daemon_free(d);
        return 1;
    }
    int status = cad_daemon_run(d);
    bool abandoned = cad_daemon_work_abandoned(d);
    cad_daemon_free(d);
    cad_commands_free(commands);
    if (abandoned) { /* a plugin thread is stuck: libuv's exit handler would join it */
        fflush(NULL);
        _exit(status);
    }
    return status;
}
