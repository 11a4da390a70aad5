/*
 * yaml.h - YAML text -> Lua tables, for the configuration compiler (lua/meltemi/compiler.lua).
 * Exposed to Lua as require("meltemi.c").yaml_load; see yaml.c for the exact shape.
 */
#ifndef MELTEMI_YAML_H
#define MELTEMI_YAML_H

#include <lua.h>

/*
 * yaml_load(text, filename) -> docs, lines | nil, "file:line: yaml: message"
 *
 * docs is an array with one entry per document of the stream; an empty document is the
 * null sentinel (lightuserdata NULL, also exported as require("meltemi.c").null).
 * lines maps every container table to its line table: lines[t][0] is the line where t starts,
 * lines[t][key_or_index] the line of that key (or sequence item), lines[t][-1] is "map" or
 * "seq" (an empty table alone cannot tell). lines[docs][i] is where document i starts.
 * Plain scalars resolve like YAML 1.2's core schema (null, bool, int, float, else string);
 * quoted scalars and mapping keys stay strings. A null mapping value leaves the key out of
 * the table but keeps its line; a null sequence item is the null sentinel.
 * Aliases are expanded into copies (bounded); merge keys (<<) are rejected.
 */
int mt_yaml_load(lua_State *L);

#endif
