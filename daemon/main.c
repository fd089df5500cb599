/*
 * main.c — cadenced's entry point: parse the command line, then hand over to
 * daemon.c. Wiring only; every decision lives in a module.
 *
 * Exit status: 0 after an orderly stop (or a valid --check), 1 when the
 * daemon cannot start or the config is invalid, 2 for a usage error.
 */
#include "config.h"
#include "daemon.h"
#include "log.h"
#include "plugin_host.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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
            "  -V, --version          print the version and exit\n"
            "  -h, --help             print this help and exit\n"
            "\n"
            "Signals: SIGHUP reloads the configuration (an invalid one is logged and the\n"
            "running one kept); SIGTERM and SIGINT drain in-flight work and exit.\n");
}

enum { OPT_CHECK = 256, OPT_STATE_DIR, OPT_SOCKET, OPT_PLUGIN_DIR, OPT_LOG_LEVEL };

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
        int failed = cad_plugin_host_check(cfg, stderr);
        if (failed > 0) {
            fprintf(stderr, "%s: %d channel%s would not load their plugin\n", path, failed,
                    failed == 1 ? "" : "s");
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
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    cad_daemon_options_t opts = {.config_path = DEFAULT_CONFIG, .log_level = -1};
    bool check = false;
    int c;
    while ((c = getopt_long(argc, argv, "c:Vh", options, NULL)) != -1) {
        switch (c) {
        case 'c': opts.config_path = optarg; break;
        case OPT_CHECK: check = true; break;
        case OPT_STATE_DIR: opts.state_dir = optarg; break;
        case OPT_SOCKET: opts.socket_path = optarg; break;
        case OPT_PLUGIN_DIR: opts.plugin_dir = optarg; break;
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
    if (optind < argc) {
        fprintf(stderr, "cadenced: unexpected argument \"%s\"\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (check)
        return check_config(opts.config_path, opts.plugin_dir);

    cad_log_init(opts.log_level >= 0 ? (enum cad_log_level)opts.log_level : CAD_LOG_INFO);
    char err[CAD_ERRBUF] = "";
    cad_daemon_t *d = NULL;
    if (cad_daemon_new(&opts, &d, err) != 0) {
        cad_log_err("cadenced cannot start: %s", err);
        return 1;
    }
    int status = cad_daemon_run(d);
    cad_daemon_free(d);
    return status;
}
