/*
 * test_daemon.c — the daemon context in-process: overrides, reload through
 * the API (hooks, rejected files), and the shutdown sequence with services
 * that stop quickly, late, or never (bounded by engine.shutdown_timeout).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "daemon.h"
#include "log.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct fixture {
    char dir[64];
    char config[128];
    char state[128];
    char socket[128];
    cad_daemon_t *d;
    uv_timer_t trigger, service_timer;
    int stop_calls;
    int reload_hook_calls;
    uint32_t hook_max_line;
    bool service_never_stops;
} fixture_t;

static const char *CONFIG_TEMPLATE =
    "store = { state_dir = \"%s\"; sync = \"normal\"; };\n"
    "control = { socket = \"%s\"; max_line = %u; };\n"
    "log = { level = \"warning\"; };\n"
    "engine = { shutdown_timeout = \"1s\"; };\n"
    "channels = ( { name = \"file\"; plugin = \"file\"; address = \"none\"; } );\n"
    "policies = ( { segment = \"default\"; min_gap = \"3d\"; max_silence = \"60d\"; } );\n"
    "rules = ( );\n";

static void write_config(fixture_t *f, unsigned max_line, const char *extra)
{
    FILE *out = fopen(f->config, "w");
    assert_non_null(out);
    fprintf(out, CONFIG_TEMPLATE, f->state, f->socket, max_line);
    if (extra)
        fputs(extra, out);
    fclose(out);
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    strcpy(f->dir, "/tmp/cad-daemon-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->config, sizeof(f->config), "%s/cadenced.conf", f->dir);
    snprintf(f->state, sizeof(f->state), "%s/state", f->dir);
    snprintf(f->socket, sizeof(f->socket), "%s/control.sock", f->dir);
    write_config(f, 2048, NULL);
    unsetenv("NOTIFY_SOCKET");
    unsetenv("STATE_DIRECTORY");
    unsetenv("RUNTIME_DIRECTORY");
    unsetenv("CREDENTIALS_DIRECTORY");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static cad_daemon_t *new_daemon(fixture_t *f, const char *state_dir)
{
    cad_daemon_options_t o = {.config_path = f->config, .state_dir = state_dir, .log_level = -1};
    char err[CAD_ERRBUF] = "";
    cad_daemon_t *d = NULL;
    int rc = cad_daemon_new(&o, &d, err);
    if (rc != 0)
        fail_msg("cad_daemon_new: %s", err);
    return d;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- shutdown ------------------------------------------------------------ */

static void on_service_done(uv_timer_t *t)
{
    fixture_t *f = t->data;
    uv_close((uv_handle_t *)t, NULL);
    cad_daemon_service_stopped(f->d, "dispatcher");
}

static void service_stop(cad_daemon_t *d, void *arg)
{
    fixture_t *f = arg;
    f->stop_calls++;
    if (f->service_never_stops)
        return;
    /* finish in-flight work 100 ms later */
    uv_timer_init(cad_daemon_loop(d), &f->service_timer);
    f->service_timer.data = f;
    uv_timer_start(&f->service_timer, on_service_done, 100, 0);
}

static void on_trigger(uv_timer_t *t)
{
    fixture_t *f = t->data;
    uv_close((uv_handle_t *)t, NULL);
    cad_daemon_shutdown(f->d);
}

static void schedule_shutdown(fixture_t *f, uint64_t ms)
{
    uv_timer_init(cad_daemon_loop(f->d), &f->trigger);
    f->trigger.data = f;
    uv_timer_start(&f->trigger, on_trigger, ms, 0);
}

static void test_shutdown_waits_for_a_service(void **state)
{
    fixture_t *f = *state;
    f->d = new_daemon(f, NULL);
    assert_int_equal(cad_daemon_add_service(f->d, "dispatcher", service_stop, f), 0);
    schedule_shutdown(f, 20);
    double t0 = now_seconds();
    assert_int_equal(cad_daemon_run(f->d), 0);
    double took = now_seconds() - t0;
    assert_int_equal(f->stop_calls, 1);
    assert_true(took >= 0.1 && took < 0.9); /* waited for the service, not the timeout */
    struct stat st;
    assert_int_equal(stat(f->socket, &st), -1); /* socket file removed */
    cad_daemon_free(f->d);
}

static void test_shutdown_gives_up_after_the_timeout(void **state)
{
    fixture_t *f = *state;
    f->service_never_stops = true;
    f->d = new_daemon(f, NULL);
    assert_int_equal(cad_daemon_add_service(f->d, "dispatcher", service_stop, f), 0);
    schedule_shutdown(f, 20);
    double t0 = now_seconds();
    assert_int_equal(cad_daemon_run(f->d), 0);
    double took = now_seconds() - t0;
    assert_int_equal(f->stop_calls, 1);
    assert_true(took >= 0.9 && took < 3.0); /* engine.shutdown_timeout = 1s */
    cad_daemon_free(f->d);
}

static void test_without_services_shutdown_is_immediate(void **state)
{
    fixture_t *f = *state;
    f->d = new_daemon(f, NULL);
    schedule_shutdown(f, 10);
    double t0 = now_seconds();
    assert_int_equal(cad_daemon_run(f->d), 0);
    assert_true(now_seconds() - t0 < 0.5);
    cad_daemon_free(f->d);
}

/* ---- reload -------------------------------------------------------------- */

static void reload_hook(const cad_config_t *cfg, void *arg)
{
    fixture_t *f = arg;
    f->reload_hook_calls++;
    f->hook_max_line = cfg->max_line;
}

static void test_reload_swaps_or_keeps(void **state)
{
    fixture_t *f = *state;
    f->d = new_daemon(f, NULL);
    assert_int_equal(cad_daemon_on_reload(f->d, reload_hook, f), 0);
    const cad_config_t *before = cad_daemon_config(f->d);
    assert_int_equal(before->max_line, 2048);

    write_config(f, 4096, NULL);
    json_t *errors = NULL;
    assert_int_equal(cad_daemon_reload(f->d, &errors), 0);
    assert_null(errors);
    assert_int_equal(f->reload_hook_calls, 1);
    assert_int_equal(f->hook_max_line, 4096);
    assert_int_equal(cad_daemon_config(f->d)->max_line, 4096);

    write_config(f, 4096, "bogus_section = 1;\nengine2 = 3;\n");
    assert_int_equal(cad_daemon_reload(f->d, &errors), -CAD_EINVAL);
    assert_non_null(errors);
    assert_int_equal(json_array_size(errors), 2);
    char expect[200];
    snprintf(expect, sizeof(expect), "%s:8:", f->config);
    assert_non_null(strstr(json_string_value(json_array_get(errors, 0)), expect));
    json_decref(errors);
    assert_int_equal(f->reload_hook_calls, 1);                 /* not called */
    assert_int_equal(cad_daemon_config(f->d)->max_line, 4096); /* old one kept */

    unlink(f->config);
    assert_true(cad_daemon_reload(f->d, &errors) < 0);
    assert_true(json_array_size(errors) >= 1);
    json_decref(errors);
    assert_int_equal(cad_daemon_config(f->d)->max_line, 4096);

    schedule_shutdown(f, 0);
    assert_int_equal(cad_daemon_run(f->d), 0);
    cad_daemon_free(f->d);
}

/* ---- construction -------------------------------------------------------- */

static void test_overrides_and_accessors(void **state)
{
    fixture_t *f = *state;
    char env_state[160];
    snprintf(env_state, sizeof(env_state), "%s/env-state:%s/second", f->dir, f->dir);
    setenv("STATE_DIRECTORY", env_state, 1);
    setenv("CREDENTIALS_DIRECTORY", "/run/credentials/cadenced.service", 1);
    f->d = new_daemon(f, NULL);
    const cad_config_t *cfg = cad_daemon_config(f->d);
    char expect[160];
    snprintf(expect, sizeof(expect), "%s/env-state", f->dir);
    assert_string_equal(cfg->state_dir, expect); /* first entry of the list */
    assert_string_equal(cfg->credentials_dir, "/run/credentials/cadenced.service");
    assert_non_null(cad_daemon_store(f->d));
    assert_non_null(cad_daemon_scheduler(f->d));
    assert_non_null(cad_daemon_control(f->d));
    assert_int_equal(cad_daemon_add_service(f->d, NULL, service_stop, f), -CAD_EINVAL);
    cad_daemon_free(f->d); /* freeing without running is allowed */
    f->d = NULL;

    char flag_state[160];
    snprintf(flag_state, sizeof(flag_state), "%s/flag-state", f->dir);
    f->d = new_daemon(f, flag_state); /* the flag wins over the environment */
    assert_string_equal(cad_daemon_config(f->d)->state_dir, flag_state);
    unsetenv("STATE_DIRECTORY");
    unsetenv("CREDENTIALS_DIRECTORY");
    schedule_shutdown(f, 0);
    assert_int_equal(cad_daemon_run(f->d), 0);
    cad_daemon_free(f->d);
}

static void test_start_failures_name_the_cause(void **state)
{
    fixture_t *f = *state;
    char err[CAD_ERRBUF] = "";
    cad_daemon_t *d = NULL;
    cad_daemon_options_t o = {.config_path = NULL, .log_level = -1};
    assert_int_equal(cad_daemon_new(&o, &d, err), -CAD_EINVAL);
    assert_non_null(strstr(err, "--config"));

    char missing[160];
    snprintf(missing, sizeof(missing), "%s/missing.conf", f->dir);
    o.config_path = missing;
    assert_true(cad_daemon_new(&o, &d, err) < 0);
    assert_null(d);

    /* the state directory cannot be created under a regular file */
    char blocker[160], under[200];
    snprintf(blocker, sizeof(blocker), "%s/file", f->dir);
    FILE *b = fopen(blocker, "w");
    fclose(b);
    snprintf(under, sizeof(under), "%s/state", blocker);
    o.config_path = f->config;
    o.state_dir = under;
    assert_int_equal(cad_daemon_new(&o, &d, err), -CAD_EIO);
    assert_non_null(strstr(err, "state directory"));
    assert_null(d);
}

int main(void)
{
    int devnull = open("/dev/null", O_WRONLY);
    cad_log_set_output(devnull, false);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_shutdown_waits_for_a_service, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_gives_up_after_the_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_without_services_shutdown_is_immediate, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_reload_swaps_or_keeps, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overrides_and_accessors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_start_failures_name_the_cause, setup, teardown),
    };
    return cmocka_run_group_tests_name("daemon", tests, NULL, NULL);
}
