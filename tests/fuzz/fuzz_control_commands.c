/*
 * fuzz_control_commands.c — the daemon's real control commands (status,
 * reload and everything of commands.c: customer, contact, event, import,
 * calendar, why, pause, outbox, alerts, report, holdout, plugins, metrics)
 * behind the real socket, with their argument checks and store writes.
 *
 * Once: a daemon is built with cad_daemon_new on a small config in a
 * private directory (file channel, one transactional rule), with a few
 * customers, and its commands registered; its loop is turned by this
 * thread, between inputs too, so the scheduler and dispatcher keep up.
 * Per input: the bytes go to the control socket as in fuzz_control.h, with
 * the same properties. Inputs asking for "simulate" are skipped: it starts
 * `cadenced --simulate` as a child process, which here would be this
 * program.
 */
#include "fuzz_control.h"

#include "commands.h"
#include "daemon.h"
#include "log.h"

#include <sys/stat.h>

static cad_daemon_t *daemon_;
static cad_commands_t *commands;
static char sock_path[300];

static const char *config_text =
    "store = { state_dir = \"%s/state\"; sync = \"normal\"; };\n"
    "control = { socket = \"%s\"; max_line = 4096; };\n"
    "log = { level = \"err\"; };\n"
    "plugins = { dir = \"%s/plugins\"; };\n"
    "channels = ( { name = \"email\"; plugin = \"file\"; address = \"email\";\n"
    "               settings = { directory = \"out\"; }; } );\n"
    "templates = ( { name = \"invoice\"; subject = \"Invoice\"; text = \"Hi "
    "{{contact.first_name}}\"; } );\n"
    "policies = ( { segment = \"default\"; min_gap = \"1d\"; } );\n"
    "rules = ( { name = \"invoice_notice\"; purpose = \"transactional\";\n"
    "  trigger = { event = \"invoice_issued\"; after = \"0s\"; expires = \"3d\"; };\n"
    "  stages = [ \"active\" ]; roles = [ \"billing\" ]; channels = [ \"email\" ];\n"
    "  bypass_caps = true; bypass_quiet_hours = true; template = \"invoice\"; } );\n";

static void call(const char *line)
{
    fuzz_control_exchange(cad_daemon_loop(daemon_), cad_daemon_control(daemon_), sock_path,
                          (const uint8_t *)line, strlen(line), 4096);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *dir = fuzz_make_tmpdir("commands");
    char path[512], plugins[512];
    snprintf(sock_path, sizeof(sock_path), "%s/control.sock", dir);
    snprintf(plugins, sizeof(plugins), "%s/plugins", dir);
    mkdir(plugins, 0700);
    snprintf(path, sizeof(path), "%s/cadenced.conf", dir);
    FILE *f = fopen(path, "w");
    FUZZ_CHECK(f != NULL, "cannot write %s", path);
    fprintf(f, config_text, dir, sock_path, dir);
    fclose(f);
    cad_log_init(CAD_LOG_ERR);
    cad_log_set_level(CAD_LOG_ERR);
    cad_daemon_options_t opts = {.config_path = path, .log_level = CAD_LOG_ERR};
    char err[CAD_ERRBUF] = "";
    FUZZ_CHECK(cad_daemon_new(&opts, &daemon_, err) == 0, "daemon: %s", err);
    FUZZ_CHECK(cad_commands_register(daemon_, &commands, err) == 0, "commands: %s", err);
    call("{\"cmd\":\"customer.add\",\"customer\":{\"id\":\"acme\",\"name\":\"Acme\","
         "\"stage\":\"active\"}}\n"
         "{\"cmd\":\"contact.add\",\"contact\":{\"id\":\"acme-billing\",\"customer\":\"acme\","
         "\"name\":\"Pat\",\"roles\":[\"billing\"],\"email\":\"pat@acme.example\"}}\n"
         "{\"cmd\":\"event.add\",\"event\":{\"id\":\"acme-inv-1\",\"customer\":\"acme\","
         "\"type\":\"invoice_issued\",\"at\":\"now-1m\"}}\n");
    return 0;
}

/* True when a line of the input asks for a forecast (see the top comment). */
static bool asks_for_simulate(const uint8_t *data, size_t size)
{
    size_t start = 0;
    for (size_t i = 0; i <= size; i++) {
        if (i < size && data[i] != '\n')
            continue;
        json_t *req = json_loadb((const char *)data + start, i - start, JSON_DECODE_ANY, NULL);
        const char *cmd = json_string_value(json_object_get(req, "cmd"));
        bool sim = cmd && strncmp(cmd, "simulate", 8) == 0;
        json_decref(req);
        if (sim)
            return true;
        start = i + 1;
    }
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!daemon_)
        LLVMFuzzerInitialize(NULL, NULL);
    if (asks_for_simulate(data, size))
        return 0;
    fuzz_control_exchange(cad_daemon_loop(daemon_), cad_daemon_control(daemon_), sock_path, data,
                          size, 4096);
    return 0;
}
