/*
 * template.h — {{variable}} substitution for message templates.
 *
 * A template is text with variables in double braces: {{customer.name}},
 * {{contact.first_name}}, {{content.url}}, {{unsubscribe_url}}... (the list
 * is cad_template_variables; docs/plugins.md shows them all). Blanks inside
 * the braces are allowed. {{customer.<attribute>}} reads a key of the
 * customer's attributes JSON object. Values are inserted raw in text parts,
 * HTML-escaped in HTML parts and percent-encoded (RFC 3986, as a component)
 * in URL and address templates such as the unsubscribe settings; the
 * template's own text is never changed.
 *
 * Errors come at two times: cad_template_check() at config load finds syntax
 * errors and unknown variables (everything but customer attributes is known
 * then); cad_template_render() fails when a customer lacks an attribute a
 * template uses, which the host turns into a permanent failure naming it.
 * Rendering never reads past the template's end and its output is bounded by
 * CAD_TEMPLATE_OUTPUT_MAX.
 */
#ifndef CADENCE_TEMPLATE_H
#define CADENCE_TEMPLATE_H

#include "common.h"

#include <cadence/channel.h>

#define CAD_TEMPLATE_OUTPUT_MAX (1024 * 1024) /* bytes of one rendered part */
#define CAD_TEMPLATE_VAR_MAX    128           /* bytes of a variable name */

/* The fixed variable names, NULL-terminated; customer.<attribute> comes on top. */
extern const char *const cad_template_variables[];

/* Checks a template's syntax and variable names. Returns 0, or -CAD_EINVAL
 * with a sentence in err naming the variable (or the unclosed brace) and its
 * line:column inside the template; the caller prefixes the config file:line.
 * A NULL template is valid (an absent part). */
int cad_template_check(const char *tmpl, char *err);

/* The same, also refusing every variable whose name starts with `prefix`
 * ("content." for a rule that sends no content item): such a variable would
 * render empty, a message with a hole in it. */
int cad_template_check_without(const char *tmpl, const char *prefix, char *err);

/* Renders `tmpl` against a touch (its customer, contact, content, rule...),
 * HTML-escaping values when `html`. Returns 0 and *out, a malloc'd string the
 * caller frees; or a negative code with err: -CAD_EINVAL for a syntax error,
 * an unknown variable or a bad attributes object, -CAD_ENOTFOUND for a
 * customer attribute the customer lacks, -CAD_EFULL when the output would
 * pass CAD_TEMPLATE_OUTPUT_MAX. A NULL template renders as "". */
int cad_template_render(const char *tmpl, bool html, const cad_plugin_touch_t *touch, char **out,
                        char *err);

/* The same with a choice of escaping: CAD_PLUGIN_ESCAPE_NONE, _HTML (as
 * html above) or _URI_COMPONENT (every value byte outside RFC 3986's
 * unreserved set written as %XX, upper-case hex). */
int cad_template_render_as(const char *tmpl, enum cad_plugin_escape escape,
                           const cad_plugin_touch_t *touch, char **out, char *err);

#endif
