/*
 * config.h - the configuration compiler's C face: YAML files in a directory in, one snapshot
 * table out (shape: docs/snapshot.md). The work happens in lua/meltemi/compiler.lua.
 */
#ifndef MELTEMI_CONFIG_H
#define MELTEMI_CONFIG_H

#include <lua.h>

/*
 * Compiles every *.yaml / *.yml in dir. Returns 0 and pushes the snapshot table on success;
 * returns -1 and pushes an array of error strings ("file:line: Kind/name: field: message")
 * on failure. Never raises a Lua error.
 */
int mt_config_compile(lua_State *L, const char *dir);

/* `meltemi validate DIR`: prints warnings and errors to stderr; returns an exit code. */
int mt_cmd_validate(const char *dir);
/* `meltemi compile DIR`: prints the snapshot as readable Lua to stdout; returns an exit code. */
int mt_cmd_compile(const char *dir);
/* `meltemi lua FILE [ARGS]`: runs a Lua script in a meltemi Lua state (used by tests/lua). */
int mt_cmd_lua(const char *file, int argc, char **argv);

#endif
