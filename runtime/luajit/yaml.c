/*
 * yaml.c - libyaml's event stream turned into Lua tables plus a side table of line numbers,
 * so that the config compiler can say "file:line" for every field it rejects.
 *
 * Containers under construction live on the Lua stack, four slots per open container
 * (table, line table, anchor name or nil, pending mapping key or nil); finished values are
 * pushed on top and attached to the container below. Nothing here recurses on input depth
 * except alias copying, which is bounded by YAML_MAX_DEPTH like the input itself.
 * The libyaml parser and its current event live in a userdata with __gc, so a Lua error
 * (out of memory) in the middle never leaks them.
 */
#include "runtime/luajit/yaml.h"

#include <lauxlib.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define YAML_MAX_DEPTH 100
#define YAML_MAX_NODES (1u << 20) /* after alias expansion: a "billion laughs" guard */
#define YAML_STATE_MT "meltemi.yaml_state"

/* Fixed stack slots of mt_yaml_load. */
enum { SLOT_TEXT = 1, SLOT_FILE, SLOT_STATE, SLOT_DOCS, SLOT_LINES, SLOT_ANCHORS, SLOT_DOCLINES };
#define SLOT_FRAMES 8
#define FRAME_SLOTS 4

typedef struct yaml_frame {
    bool is_map;
    bool have_key;
    int key_line;
    lua_Integer n; /* sequence items so far */
} yaml_frame_t;

typedef struct yaml_loader {
    lua_State *L;
    const char *file;
    yaml_frame_t frames[YAML_MAX_DEPTH];
    int depth;
    size_t nodes;
    char err[512];
} yaml_loader_t;

/* Everything that must be released even if Lua raises midway (out of memory). */
typedef struct yaml_state {
    yaml_parser_t parser;
    yaml_event_t event;
    bool parser_ready;
    bool event_ready;
    yaml_loader_t ld;
} yaml_state_t;

static int yaml_state_gc(lua_State *L)
{
    yaml_state_t *st = luaL_checkudata(L, 1, YAML_STATE_MT);
    if (st->event_ready)
        yaml_event_delete(&st->event);
    if (st->parser_ready)
        yaml_parser_delete(&st->parser);
    st->event_ready = st->parser_ready = false;
    return 0;
}

static int yaml_fail(yaml_loader_t *ld, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int yaml_fail(yaml_loader_t *ld, int line, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(ld->err, sizeof ld->err, "%s:%d: yaml: %s", ld->file, line, msg);
    return -1;
}

static int frame_base(int depth_index)
{
    return SLOT_FRAMES + FRAME_SLOTS * depth_index;
}

/* ---- scalar resolution (YAML 1.2 core schema) ------------------------------------------- */

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool yaml_is_null(const char *s, size_t n)
{
    return n == 0 || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 || strcmp(s, "Null") == 0 ||
           strcmp(s, "NULL") == 0;
}

/* Returns 1 for true, 0 for false, -1 for neither. */
static int yaml_bool_of(const char *s)
{
    if (strcmp(s, "true") == 0 || strcmp(s, "True") == 0 || strcmp(s, "TRUE") == 0)
        return 1;
    if (strcmp(s, "false") == 0 || strcmp(s, "False") == 0 || strcmp(s, "FALSE") == 0)
        return 0;
    return -1;
}

static bool yaml_int_of(const char *s, size_t n, double *out)
{
    size_t i = 0;
    if (n > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'o')) {
        int base = s[1] == 'x' ? 16 : 8;
        char *end;
        unsigned long long v = strtoull(s + 2, &end, base);
        if (end != s + n || s[2] == '-' || s[2] == '+' || s[2] == ' ')
            return false;
        *out = (double)v;
        return true;
    }
    if (i < n && (s[i] == '-' || s[i] == '+'))
        i++;
    if (i == n)
        return false;
    for (; i < n; i++) {
        if (!is_digit(s[i]))
            return false;
    }
    *out = strtod(s, NULL);
    return true;
}

static bool yaml_float_of(const char *s, size_t n, double *out)
{
    size_t i = 0, int_digits = 0, frac_digits = 0;
    const char *t = s;
    if (i < n && (s[i] == '-' || s[i] == '+'))
        i++;
    const char *special = s + i;
    if (strcmp(special, ".inf") == 0 || strcmp(special, ".Inf") == 0 ||
        strcmp(special, ".INF") == 0) {
        *out = s[0] == '-' ? -HUGE_VAL : HUGE_VAL;
        return true;
    }
    if (i == 0 && (strcmp(t, ".nan") == 0 || strcmp(t, ".NaN") == 0 || strcmp(t, ".NAN") == 0)) {
        *out = NAN;
        return true;
    }
    for (; i < n && is_digit(s[i]); i++)
        int_digits++;
    if (i < n && s[i] == '.') {
        for (i++; i < n && is_digit(s[i]); i++)
            frac_digits++;
    }
    if (int_digits == 0 && frac_digits == 0)
        return false;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        size_t exp_digits = 0;
        i++;
        if (i < n && (s[i] == '-' || s[i] == '+'))
            i++;
        for (; i < n && is_digit(s[i]); i++)
            exp_digits++;
        if (exp_digits == 0)
            return false;
    }
    if (i != n)
        return false;
    *out = strtod(s, NULL);
    return true;
}

/* Pushes the resolved value of a plain, untagged scalar (nil for null). */
static void yaml_push_plain(lua_State *L, const char *s, size_t n)
{
    double d;
    int b;
    if (yaml_is_null(s, n)) {
        lua_pushnil(L);
    } else if ((b = yaml_bool_of(s)) >= 0) {
        lua_pushboolean(L, b);
    } else if (yaml_int_of(s, n, &d) || yaml_float_of(s, n, &d)) {
        lua_pushnumber(L, d);
    } else {
        lua_pushlstring(L, s, n);
    }
}

#define YAML_TAG_PREFIX "tag:yaml.org,2002:"

/* Pushes a scalar honouring an explicit tag; returns -1 (with ld->err set) on a bad one. */
static int yaml_push_tagged(yaml_loader_t *ld, const char *tag, const char *s, size_t n, int line)
{
    lua_State *L = ld->L;
    double d;
    int b;
    const size_t plen = sizeof YAML_TAG_PREFIX - 1;
    if (strcmp(tag, "!") == 0 || strcmp(tag, YAML_TAG_PREFIX "str") == 0) {
        lua_pushlstring(L, s, n);
        return 0;
    }
    if (strncmp(tag, YAML_TAG_PREFIX, plen) != 0)
        return yaml_fail(ld, line, "unsupported tag %s", tag);
    const char *t = tag + plen;
    if (strcmp(t, "null") == 0 && yaml_is_null(s, n)) {
        lua_pushnil(L);
    } else if (strcmp(t, "bool") == 0 && (b = yaml_bool_of(s)) >= 0) {
        lua_pushboolean(L, b);
    } else if (strcmp(t, "int") == 0 && yaml_int_of(s, n, &d)) {
        lua_pushnumber(L, d);
    } else if (strcmp(t, "float") == 0 && (yaml_int_of(s, n, &d) || yaml_float_of(s, n, &d))) {
        lua_pushnumber(L, d);
    } else {
        return yaml_fail(ld, line, "value \"%.40s\" does not fit its tag !!%s", s, t);
    }
    return 0;
}

/* ---- building containers ---------------------------------------------------------------- */

static int yaml_count_node(yaml_loader_t *ld, int line)
{
    if (++ld->nodes > YAML_MAX_NODES)
        return yaml_fail(ld, line, "document too large (more than %u nodes after aliases)",
                         YAML_MAX_NODES);
    return 0;
}

static bool yaml_in_key_position(const yaml_loader_t *ld)
{
    if (ld->depth == 0)
        return false;
    const yaml_frame_t *f = &ld->frames[ld->depth - 1];
    return f->is_map && !f->have_key;
}

/* Attaches the value on top of the stack (nil = null) to the open container or the document
 * list, and pops it. */
static int yaml_add_value(yaml_loader_t *ld, int line)
{
    lua_State *L = ld->L;
    if (ld->depth == 0) {
        size_t i = lua_objlen(L, SLOT_DOCS) + 1;
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_pushlightuserdata(L, NULL);
        }
        lua_rawseti(L, SLOT_DOCS, (int)i);
        lua_pushinteger(L, line);
        lua_rawseti(L, SLOT_DOCLINES, (int)i);
        return 0;
    }
    yaml_frame_t *f = &ld->frames[ld->depth - 1];
    int b = frame_base(ld->depth - 1);
    if (!f->is_map) {
        f->n++;
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_pushlightuserdata(L, NULL);
        }
        lua_rawseti(L, b, (int)f->n);
        lua_pushinteger(L, line);
        lua_rawseti(L, b + 1, (int)f->n);
        return 0;
    }
    if (!f->have_key) {
        if (lua_type(L, -1) != LUA_TSTRING)
            return yaml_fail(ld, line, "mapping keys must be scalars");
        if (strcmp(lua_tostring(L, -1), "<<") == 0)
            return yaml_fail(ld, line, "merge keys (<<) are not supported");
        lua_replace(L, b + 3);
        f->have_key = true;
        f->key_line = line;
        return 0;
    }
    lua_pushvalue(L, b + 3);
    lua_rawget(L, b + 1);
    bool duplicate = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (duplicate)
        return yaml_fail(ld, f->key_line, "duplicate key \"%.80s\"", lua_tostring(L, b + 3));
    if (!lua_isnil(L, -1)) {
        lua_pushvalue(L, b + 3);
        lua_insert(L, -2);
        lua_rawset(L, b);
    } else {
        lua_pop(L, 1);
    }
    lua_pushvalue(L, b + 3);
    lua_pushinteger(L, f->key_line);
    lua_rawset(L, b + 1);
    lua_pushnil(L);
    lua_replace(L, b + 3);
    f->have_key = false;
    return 0;
}

static int yaml_open(yaml_loader_t *ld, bool is_map, const char *anchor, const char *tag, int line)
{
    lua_State *L = ld->L;
    if (yaml_in_key_position(ld))
        return yaml_fail(ld, line, "mapping keys must be scalars");
    if (ld->depth >= YAML_MAX_DEPTH)
        return yaml_fail(ld, line, "nesting deeper than %d levels", YAML_MAX_DEPTH);
    if (tag && strcmp(tag, is_map ? YAML_TAG_PREFIX "map" : YAML_TAG_PREFIX "seq") != 0 &&
        strcmp(tag, "!") != 0)
        return yaml_fail(ld, line, "unsupported tag %s", tag);
    if (yaml_count_node(ld, line) < 0)
        return -1;
    if (!lua_checkstack(L, FRAME_SLOTS + 8))
        return yaml_fail(ld, line, "out of Lua stack");
    lua_newtable(L); /* b: the container */
    lua_newtable(L); /* b + 1: its lines */
    lua_pushinteger(L, line);
    lua_rawseti(L, -2, 0);
    lua_pushstring(L, is_map ? "map" : "seq");
    lua_rawseti(L, -2, -1);
    lua_pushvalue(L, -2);
    lua_pushvalue(L, -2);
    lua_rawset(L, SLOT_LINES);
    if (anchor)
        lua_pushstring(L, anchor); /* b + 2 */
    else
        lua_pushnil(L);
    lua_pushnil(L); /* b + 3: pending key */
    ld->frames[ld->depth] = (yaml_frame_t){.is_map = is_map};
    ld->depth++;
    return 0;
}

static int yaml_close(yaml_loader_t *ld)
{
    lua_State *L = ld->L;
    ld->depth--;
    int b = frame_base(ld->depth);
    lua_rawgeti(L, b + 1, 0);
    int line = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    if (!lua_isnil(L, b + 2)) {
        lua_pushvalue(L, b + 2);
        lua_pushvalue(L, b);
        lua_rawset(L, SLOT_ANCHORS);
    }
    lua_settop(L, b);
    return yaml_add_value(ld, line);
}

/* Pushes a deep copy of the value at index src (absolute), copying line tables along. */
static int yaml_copy(yaml_loader_t *ld, int src, int line, int depth)
{
    lua_State *L = ld->L;
    if (yaml_count_node(ld, line) < 0)
        return -1;
    if (lua_type(L, src) != LUA_TTABLE) {
        lua_pushvalue(L, src);
        return 0;
    }
    if (depth > YAML_MAX_DEPTH || !lua_checkstack(L, 8))
        return yaml_fail(ld, line, "alias nesting too deep");
    lua_newtable(L);
    int dst = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, src) != 0) {
        if (yaml_copy(ld, lua_gettop(L), line, depth + 1) < 0)
            return -1;
        lua_pushvalue(L, -3);
        lua_insert(L, -2);
        lua_rawset(L, dst);
        lua_pop(L, 1);
    }
    lua_pushvalue(L, src);
    lua_rawget(L, SLOT_LINES);
    if (lua_istable(L, -1)) {
        lua_newtable(L);
        lua_pushnil(L);
        while (lua_next(L, -3) != 0) {
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_rawset(L, -4);
        }
        lua_pushvalue(L, dst);
        lua_insert(L, -2);
        lua_rawset(L, SLOT_LINES);
    }
    lua_settop(L, dst);
    return 0;
}

static int yaml_on_alias(yaml_loader_t *ld, const char *anchor, int line)
{
    lua_State *L = ld->L;
    lua_getfield(L, SLOT_ANCHORS, anchor);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return yaml_fail(ld, line, "alias *%.80s refers to an unknown or unfinished anchor",
                         anchor);
    }
    if (lua_touserdata(L, -1) == NULL && lua_islightuserdata(L, -1)) {
        lua_pop(L, 1);
        lua_pushnil(L);
    } else if (lua_istable(L, -1)) {
        if (yaml_in_key_position(ld))
            return yaml_fail(ld, line, "mapping keys must be scalars");
        if (yaml_copy(ld, lua_gettop(L), line, ld->depth) < 0)
            return -1;
        lua_remove(L, -2);
    } else if (yaml_in_key_position(ld)) {
        lua_tostring(L, -1); /* a scalar alias used as a key becomes its text */
    }
    return yaml_add_value(ld, line);
}

static int yaml_on_scalar(yaml_loader_t *ld, const yaml_event_t *ev, int line)
{
    lua_State *L = ld->L;
    const char *s = (const char *)ev->data.scalar.value;
    size_t n = ev->data.scalar.length;
    const char *tag = (const char *)ev->data.scalar.tag;
    if (yaml_count_node(ld, line) < 0)
        return -1;
    if (yaml_in_key_position(ld)) {
        lua_pushlstring(L, s, n);
    } else if (tag) {
        if (yaml_push_tagged(ld, tag, s, n, line) < 0)
            return -1;
    } else if (ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
        yaml_push_plain(L, s, n);
    } else {
        lua_pushlstring(L, s, n);
    }
    if (ev->data.scalar.anchor) {
        lua_pushstring(L, (const char *)ev->data.scalar.anchor);
        if (lua_isnil(L, -2))
            lua_pushlightuserdata(L, NULL);
        else
            lua_pushvalue(L, -2);
        lua_rawset(L, SLOT_ANCHORS);
    }
    return yaml_add_value(ld, line);
}

/* Returns 1 at the end of the stream, 0 to go on, -1 on error. */
static int yaml_on_event(yaml_loader_t *ld, const yaml_event_t *ev)
{
    int line = (int)ev->start_mark.line + 1;
    switch (ev->type) {
    case YAML_STREAM_END_EVENT:
        return 1;
    case YAML_DOCUMENT_START_EVENT:
        lua_newtable(ld->L); /* anchors are per document */
        lua_replace(ld->L, SLOT_ANCHORS);
        return 0;
    case YAML_SCALAR_EVENT:
        return yaml_on_scalar(ld, ev, line);
    case YAML_ALIAS_EVENT:
        return yaml_on_alias(ld, (const char *)ev->data.alias.anchor, line);
    case YAML_SEQUENCE_START_EVENT:
        return yaml_open(ld, false, (const char *)ev->data.sequence_start.anchor,
                         (const char *)ev->data.sequence_start.tag, line);
    case YAML_MAPPING_START_EVENT:
        return yaml_open(ld, true, (const char *)ev->data.mapping_start.anchor,
                         (const char *)ev->data.mapping_start.tag, line);
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        return yaml_close(ld);
    default:
        return 0;
    }
}

static int yaml_parser_failure(yaml_loader_t *ld, const yaml_parser_t *p)
{
    const yaml_mark_t *m = p->error == YAML_READER_ERROR ? &p->mark : &p->problem_mark;
    const char *problem = p->problem ? p->problem : "malformed document";
    if (p->context)
        return yaml_fail(ld, (int)m->line + 1, "%s %s", problem, p->context);
    return yaml_fail(ld, (int)m->line + 1, "%s", problem);
}

int mt_yaml_load(lua_State *L)
{
    size_t len;
    const char *text = luaL_checklstring(L, SLOT_TEXT, &len);
    const char *file = luaL_optstring(L, SLOT_FILE, "<string>");
    lua_settop(L, SLOT_FILE);
    yaml_state_t *st = lua_newuserdata(L, sizeof *st);
    memset(st, 0, sizeof *st);
    if (luaL_newmetatable(L, YAML_STATE_MT)) {
        lua_pushcfunction(L, yaml_state_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    lua_newtable(L); /* SLOT_DOCS */
    lua_newtable(L); /* SLOT_LINES */
    lua_newtable(L); /* SLOT_ANCHORS */
    lua_newtable(L); /* SLOT_DOCLINES */
    lua_pushvalue(L, SLOT_DOCS);
    lua_pushvalue(L, SLOT_DOCLINES);
    lua_rawset(L, SLOT_LINES);

    yaml_loader_t *ld = &st->ld;
    ld->L = L;
    ld->file = file;

    int rc = 0;
    if (!yaml_parser_initialize(&st->parser)) {
        rc = yaml_fail(ld, 1, "cannot initialise the parser");
    } else {
        st->parser_ready = true;
        yaml_parser_set_input_string(&st->parser, (const unsigned char *)text, len);
        yaml_parser_set_encoding(&st->parser, YAML_UTF8_ENCODING);
    }
    while (rc == 0) {
        if (!yaml_parser_parse(&st->parser, &st->event)) {
            rc = yaml_parser_failure(ld, &st->parser);
            break;
        }
        st->event_ready = true;
        rc = yaml_on_event(ld, &st->event);
        yaml_event_delete(&st->event);
        st->event_ready = false;
    }
    yaml_parser_delete(&st->parser);
    st->parser_ready = false;
    if (rc < 0) {
        lua_pushnil(L);
        lua_pushstring(L, ld->err);
        return 2;
    }
    lua_pushvalue(L, SLOT_DOCS);
    lua_pushvalue(L, SLOT_LINES);
    return 2;
}
