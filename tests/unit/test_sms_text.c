/*
 * test_sms_text.c — the SMS channel's pre-send checks.
 *
 * Compiles plugins/sms/sms_text.c directly (it belongs to the sms plugin)
 * and checks E.164 and sender validation, GSM-7/UCS-2 segment counting at
 * every boundary, and form encoding.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../plugins/sms/sms_text.c"

/* Fills buf with `n` copies of the UTF-8 character `ch`, NUL-terminated. */
static char *repeat(char *buf, const char *ch, size_t n)
{
    buf[0] = '\0';
    for (size_t i = 0; i < n; i++)
        strcat(buf, ch);
    return buf;
}

static void assert_count(const char *text, enum cad_sms_encoding encoding, size_t units,
                         size_t segments)
{
    cad_sms_count_t count;
    char err[CAD_SMS_ERRBUF] = "";
    assert_int_equal(cad_sms_count_segments(text, &count, err), 0);
    assert_int_equal(count.encoding, encoding);
    assert_int_equal(count.units, units);
    assert_int_equal(count.segments, segments);
}

static void test_e164_numbers(void **state)
{
    assert_true(cad_sms_e164_valid("+15551234567"));
    assert_true(cad_sms_e164_valid("+447700900123"));
    assert_true(cad_sms_e164_valid("+6834002"));         /* 7 digits: the shortest */
    assert_true(cad_sms_e164_valid("+123456789012345")); /* 15 digits: the longest */
    assert_false(cad_sms_e164_valid("+1234567890123456"));
    assert_false(cad_sms_e164_valid("+123456"));
    assert_false(cad_sms_e164_valid("15551234567"));
    assert_false(cad_sms_e164_valid("+05551234567"));
    assert_false(cad_sms_e164_valid("+1 555 123 4567"));
    assert_false(cad_sms_e164_valid("+1-555-123-4567"));
    assert_false(cad_sms_e164_valid("+1555123456\n"));
    assert_false(cad_sms_e164_valid(""));
    assert_false(cad_sms_e164_valid("+"));
    assert_false(cad_sms_e164_valid(NULL));
}

static void test_senders(void **state)
{
    assert_true(cad_sms_sender_valid("+15557654321"));
    assert_true(cad_sms_sender_valid("12345"));
    assert_true(cad_sms_sender_valid("CornerShop"));
    assert_true(cad_sms_sender_valid("Shop 24"));
    assert_false(cad_sms_sender_valid("CornerShopXYZ")); /* 13 characters */
    assert_false(cad_sms_sender_valid("12"));
    assert_false(cad_sms_sender_valid("Shop!"));
    assert_false(cad_sms_sender_valid(" Shop"));
    assert_false(cad_sms_sender_valid("+1555"));
    assert_false(cad_sms_sender_valid(""));
}

static void test_gsm7_single_and_concatenated(void **state)
{
    char buf[2048];
    assert_count("", CAD_SMS_GSM7, 0, 0);
    assert_count("Thanks!", CAD_SMS_GSM7, 7, 1);
    assert_count(repeat(buf, "a", 160), CAD_SMS_GSM7, 160, 1);
    assert_count(repeat(buf, "a", 161), CAD_SMS_GSM7, 161, 2);
    assert_count(repeat(buf, "a", 306), CAD_SMS_GSM7, 306, 2);
    assert_count(repeat(buf, "a", 307), CAD_SMS_GSM7, 307, 3);
    assert_count(repeat(buf, "a", 459), CAD_SMS_GSM7, 459, 3);
    assert_count(repeat(buf, "a", 460), CAD_SMS_GSM7, 460, 4);
}

static void test_gsm7_basic_non_ascii_costs_one_septet(void **state)
{
    /* é, ü, ñ, Ø, Δ, Ω, £, ¥, §, ¿, ¡, à are all in the default alphabet */
    assert_count("é ü ñ Ø Δ Ω £ ¥ § ¿ ¡ à", CAD_SMS_GSM7, 23, 1);
    char buf[2048];
    assert_count(repeat(buf, "é", 160), CAD_SMS_GSM7, 160, 1);
}

static void test_gsm7_extension_costs_two_septets(void **state)
{
    char buf[2048];
    assert_count("{}[]~|^\\€", CAD_SMS_GSM7, 18, 1);
    assert_count(repeat(buf, "€", 80), CAD_SMS_GSM7, 160, 1);
    assert_count(repeat(buf, "€", 81), CAD_SMS_GSM7, 162, 2);
}

static void test_gsm7_escape_pair_never_straddles_segments(void **state)
{
    char buf[2048];
    /* 152 + 2 + 152 = 306 septets would fit two parts of 153 if the '['
     * could be split; it cannot, so the message needs three */
    repeat(buf, "a", 152);
    strcat(buf, "[");
    strcat(buf, repeat(buf + 1024, "a", 152));
    assert_count(buf, CAD_SMS_GSM7, 306, 3);
}

static void test_ucs2_single_and_concatenated(void **state)
{
    char buf[2048];
    assert_count(repeat(buf, "ł", 70), CAD_SMS_UCS2, 70, 1);
    assert_count(repeat(buf, "ł", 71), CAD_SMS_UCS2, 71, 2);
    assert_count(repeat(buf, "ł", 134), CAD_SMS_UCS2, 134, 2);
    assert_count(repeat(buf, "ł", 135), CAD_SMS_UCS2, 135, 3);
    /* one character outside GSM-7 switches the whole message */
    repeat(buf, "a", 100);
    strcat(buf, "`");
    assert_count(buf, CAD_SMS_UCS2, 101, 2);
    assert_count("Merci 🎉", CAD_SMS_UCS2, 8, 1);
}

static void test_ucs2_surrogate_pair_never_straddles_segments(void **state)
{
    char buf[2048];
    repeat(buf, "ł", 66);
    strcat(buf, "🎉");
    strcat(buf, repeat(buf + 1024, "ł", 66));
    assert_count(buf, CAD_SMS_UCS2, 134, 3);
    assert_count(repeat(buf, "🎉", 35), CAD_SMS_UCS2, 70, 1);
}

static void test_invalid_utf8_is_refused(void **state)
{
    cad_sms_count_t count;
    char err[CAD_SMS_ERRBUF] = "";
    assert_int_equal(cad_sms_count_segments("ok \xc3", &count, err), -1);
    assert_string_equal(err, "body is not valid UTF-8 at byte 3");
    assert_int_equal(cad_sms_count_segments("\xed\xa0\x80", &count, err), -1); /* surrogate */
    assert_string_equal(err, "body is not valid UTF-8 at byte 0");
    assert_int_equal(cad_sms_count_segments("\xc0\xaf", &count, err), -1); /* overlong */
}

static void test_form_encoding(void **state)
{
    char *form = NULL;
    size_t len = 0;
    assert_int_equal(cad_sms_form_add(&form, &len, "To", "+15551234567"), 0);
    assert_int_equal(cad_sms_form_add(&form, &len, "Body", "Merci Zoë & co: 100% ok"), 0);
    assert_int_equal(cad_sms_form_add(&form, &len, "StatusCallback", "https://a.example/s?x=1"), 0);
    assert_string_equal(form, "To=%2B15551234567&Body=Merci+Zo%C3%AB+%26+co%3A+100%25+ok"
                              "&StatusCallback=https%3A%2F%2Fa.example%2Fs%3Fx%3D1");
    assert_int_equal(len, strlen(form));
    free(form);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_e164_numbers),
        cmocka_unit_test(test_senders),
        cmocka_unit_test(test_gsm7_single_and_concatenated),
        cmocka_unit_test(test_gsm7_basic_non_ascii_costs_one_septet),
        cmocka_unit_test(test_gsm7_extension_costs_two_septets),
        cmocka_unit_test(test_gsm7_escape_pair_never_straddles_segments),
        cmocka_unit_test(test_ucs2_single_and_concatenated),
        cmocka_unit_test(test_ucs2_surrogate_pair_never_straddles_segments),
        cmocka_unit_test(test_invalid_utf8_is_refused),
        cmocka_unit_test(test_form_encoding),
    };
    return cmocka_run_group_tests_name("sms_text", tests, NULL, NULL);
}
