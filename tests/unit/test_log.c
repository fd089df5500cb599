/*
 * test_log.c — log lines: the human and the journald format, the threshold,
 * one line per message whatever the message holds, $JOURNAL_STREAM
 * detection against the real stderr, and held lines (cad_log_hold).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "log.h"

#include <pthread.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Runs the logging done by fn with output to a temp file; returns its text. */
static char *capture(bool journal, void (*fn)(void))
{
    char path[] = "/tmp/cad-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    cad_log_set_output(fd, journal);
    fn();
    cad_log_set_output(2, false);
    off_t size = lseek(fd, 0, SEEK_END);
    char *text = calloc(1, (size_t)size + 1);
    assert_int_equal(pread(fd, text, (size_t)size, 0), size);
    close(fd);
    return text;
}

static int count_lines(const char *text)
{
    int n = 0;
    for (; *text; text++)
        n += *text == '\n';
    return n;
}

static void assert_matches(const char *text, const char *pattern)
{
    regex_t re;
    assert_int_equal(regcomp(&re, pattern, REG_EXTENDED | REG_NEWLINE), 0);
    int rc = regexec(&re, text, 0, NULL, 0);
    regfree(&re);
    if (rc != 0)
        fail_msg("\"%s\" does not match /%s/", text, pattern);
}

static void log_three(void)
{
    cad_log_set_level(CAD_LOG_INFO);
    cad_log_err("store failed path=%s", "/var/lib/x.db");
    cad_log_info("reload done rules=%d", 3);
    cad_log_debug("this is below the threshold");
}

static void test_human_format(void **state)
{
    char *text = capture(false, log_three);
    assert_int_equal(count_lines(text), 2);
    assert_matches(
        text, "^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}[+-][0-9]{4} error: store "
              "failed path=/var/lib/x.db$");
    assert_matches(text, "^[0-9-]{10} [0-9:]{8}[+-][0-9]{4} info: reload done rules=3$");
    free(text);
}

static void test_journal_format(void **state)
{
    char *text = capture(true, log_three);
    assert_string_equal(text, "<3>store failed path=/var/lib/x.db\n<6>reload done rules=3\n");
    free(text);
}

static void log_threshold(void)
{
    cad_log_set_level(CAD_LOG_WARNING);
    cad_log_notice("hidden");
    cad_log_warning("shown");
    cad_log_set_level((enum cad_log_level)99); /* clamped to debug */
    cad_log_debug("debug shown");
    cad_log_set_level((enum cad_log_level)0); /* clamped to err */
    cad_log_warning("hidden too");
}

static void test_threshold_and_clamping(void **state)
{
    char *text = capture(true, log_threshold);
    assert_string_equal(text, "<4>shown\n<7>debug shown\n");
    assert_int_equal(cad_log_get_level(), CAD_LOG_ERR);
    free(text);
}

static void log_multiline(void)
{
    cad_log_set_level(CAD_LOG_INFO);
    cad_log_info("customer name=%s imported", "Ann\nSmith\r\n<3>forged");
}

static void test_line_breaks_become_spaces(void **state)
{
    char *text = capture(true, log_multiline);
    assert_int_equal(count_lines(text), 1);
    assert_string_equal(text, "<6>customer name=Ann Smith  <3>forged imported\n");
    free(text);
}

static void log_long(void)
{
    cad_log_set_level(CAD_LOG_INFO);
    char *big = malloc(10000);
    memset(big, 'a', 9999);
    big[9999] = '\0';
    cad_log_info("%s", big);
    free(big);
}

/* Outside values in key=value fields: plain ones as they are, others
 * quoted so a space or an '=' cannot split or forge a field. */
static void test_values_are_quoted_when_needed(void **state)
{
    (void)state;
    char buf[CAD_LOG_VALUE_MAX];
    assert_string_equal(cad_log_value("cust-00042", buf), "cust-00042");
    assert_string_equal(cad_log_value("caf\xc3\xa9", buf), "caf\xc3\xa9");
    assert_string_equal(cad_log_value("caf\xc3\xa9 b\xc3\xbcro", buf),
                        "\"caf\xc3\xa9 b\xc3\xbcro\"");
    assert_string_equal(cad_log_value("a=b \"c\"\\\n", buf), "\"a=b \\\"c\\\"\\\\\\x0a\"");
    assert_string_equal(cad_log_value("", buf), "\"\"");
    assert_string_equal(cad_log_value(NULL, buf), "");
    char longer[3000];
    memset(longer, ' ', sizeof longer - 1);
    longer[sizeof longer - 1] = '\0';
    const char *v = cad_log_value(longer, buf);
    assert_true(strlen(v) < CAD_LOG_VALUE_MAX);
    assert_int_equal(v[strlen(v) - 1], '"');
}

static void test_long_messages_are_cut(void **state)
{
    char *text = capture(true, log_long);
    size_t n = strlen(text);
    assert_int_equal(count_lines(text), 1);
    assert_true(n <= 4096);
    assert_memory_equal(text + n - 4, "...\n", 4);
    free(text);
}

static void test_journal_stream_detection(void **state)
{
    char path[] = "/tmp/cad-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    int saved = dup(2);
    dup2(fd, 2);
    struct stat st;
    fstat(fd, &st);
    char env[64];
    snprintf(env, sizeof(env), "%ju:%ju", (uintmax_t)st.st_dev, (uintmax_t)st.st_ino);

    setenv("JOURNAL_STREAM", env, 1);
    cad_log_init(CAD_LOG_INFO);
    cad_log_info("to journald");
    setenv("JOURNAL_STREAM", "1:1", 1); /* another stream: stderr was redirected */
    cad_log_init(CAD_LOG_INFO);
    cad_log_info("to a file");
    setenv("JOURNAL_STREAM", "garbage", 1);
    cad_log_init(CAD_LOG_INFO);
    cad_log_info("garbage");
    unsetenv("JOURNAL_STREAM");

    dup2(saved, 2);
    close(saved);
    char buf[512] = "";
    assert_true(pread(fd, buf, sizeof(buf) - 1, 0) > 0);
    close(fd);
    assert_matches(buf, "^<6>to journald$");
    assert_matches(buf, "^[0-9-]{10} [0-9:]{8}[+-][0-9]{4} info: to a file$");
    assert_matches(buf, "^[0-9-]{10} [0-9:]{8}[+-][0-9]{4} info: garbage$");
}

static void test_level_names(void **state)
{
    assert_string_equal(cad_log_level_name(CAD_LOG_ERR), "error");
    assert_string_equal(cad_log_level_name(CAD_LOG_WARNING), "warning");
    assert_string_equal(cad_log_level_name(CAD_LOG_NOTICE), "notice");
    assert_string_equal(cad_log_level_name(CAD_LOG_INFO), "info");
    assert_string_equal(cad_log_level_name(CAD_LOG_DEBUG), "debug");
}

/* The size of what has been written to fd so far. */
static off_t written(int fd)
{
    return lseek(fd, 0, SEEK_END);
}

static void *log_from_another_thread(void *arg)
{
    (void)arg;
    cad_log_info("from another thread");
    return NULL;
}

/* Held notice/info/debug lines wait for the release and go out together,
 * or not at all; errors and warnings, and other threads' lines, do not
 * wait; a full buffer writes what it holds. */
static void test_held_lines(void **state)
{
    (void)state;
    char path[] = "/tmp/cad-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    cad_log_set_output(fd, true);
    cad_log_set_level(CAD_LOG_DEBUG);

    cad_log_hold();
    cad_log_info("touch decided customer=a");
    cad_log_notice("a notice");
    assert_int_equal(written(fd), 0);
    cad_log_err("an error");
    cad_log_warning("a warning");
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, log_from_another_thread, NULL), 0);
    pthread_join(th, NULL);
    cad_log_debug("touch decided customer=b");
    off_t before = written(fd);
    assert_true(before > 0);
    cad_log_release(true);
    cad_log_info("after the release");

    cad_log_hold();
    cad_log_info("touch decided customer=rolled-back");
    cad_log_release(false);

    char text[1024] = "";
    assert_true(pread(fd, text, sizeof text - 1, 0) > 0);
    assert_string_equal(text, "<3>an error\n"
                              "<4>a warning\n"
                              "<6>from another thread\n"
                              "<6>touch decided customer=a\n"
                              "<5>a notice\n"
                              "<7>touch decided customer=b\n"
                              "<6>after the release\n");

    /* 100 lines of 1,000 bytes do not fit the 64 KiB buffer: what it held
     * when full was written, the rest is dropped with the hold */
    assert_int_equal(ftruncate(fd, 0), 0);
    lseek(fd, 0, SEEK_SET);
    char filler[1001];
    memset(filler, 'x', 1000);
    filler[1000] = '\0';
    cad_log_hold();
    for (int i = 0; i < 100; i++)
        cad_log_info("%s", filler);
    off_t full = written(fd);
    cad_log_release(false);
    assert_int_equal(written(fd), full);
    assert_true(full >= 60 * 1004 && full <= 66 * 1004);
    assert_int_equal(full % 1004, 0); /* whole lines only */

    cad_log_set_output(2, false);
    cad_log_set_level(CAD_LOG_INFO);
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_human_format),
        cmocka_unit_test(test_journal_format),
        cmocka_unit_test(test_threshold_and_clamping),
        cmocka_unit_test(test_line_breaks_become_spaces),
        cmocka_unit_test(test_values_are_quoted_when_needed),
        cmocka_unit_test(test_long_messages_are_cut),
        cmocka_unit_test(test_journal_stream_detection),
        cmocka_unit_test(test_level_names),
        cmocka_unit_test(test_held_lines),
    };
    return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
