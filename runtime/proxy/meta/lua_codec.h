/*
 * lua_codec.h - codecs written in Lua (ApplicationProtocol `codec: lua`): an mt_codec_t
 * (protocols/codec.h) whose functions call a user module through the Lua codec driver
 * (lua/meltemi/codec.lua), in the sandbox, with its limits on every call. docs/codecs.md
 * ("Lua codecs") is the user's side of the contract.
 *
 * Ownership: a Lua codec is built on the main thread from a snapshot's `lua_codec` table
 * and shared by every worker. It is reference counted: each snapshot listener or cluster
 * that names it, each decoder state (one per connection and direction) and each worker
 * thread that has the module loaded hold one reference, so a connection keeps the codec it
 * started with across reloads. Two snapshots with the same definition (same source, same
 * declarations) share one codec, so an unchanged codec survives a reload as the same table.
 *
 * Threads: each worker thread runs Lua codecs in a Lua state of its own (created on first
 * use, closed when the thread ends; meltemi.sandbox as for filters), which keeps a codec's
 * memory and time apart from the filters' state and needs no hook in the worker.
 */
#ifndef MELTEMI_LUA_CODEC_H
#define MELTEMI_LUA_CODEC_H

#include "protocols/codec.h"

#include <lua.h>

/* The snapshot's codec names of Lua codecs start with this ("lua:<protocol>"). */
#define MT_LUA_CODEC_PREFIX "lua:"

static inline bool mt_lua_codec_named(const char *codec_name)
{
    return codec_name && strncmp(codec_name, MT_LUA_CODEC_PREFIX, 4) == 0;
}

/*
 * The codec that table t's `lua_codec` field describes (a listener or cluster of the
 * snapshot being read; main thread). Returns a reference the caller gives back with
 * mt_lua_codec_release, or NULL with *err set (malloc'd) when the field is missing or
 * malformed.
 */
const mt_codec_t *mt_lua_codec_from_snapshot(lua_State *L, int t, char **err);

/* Gives back a reference; a no-op for codecs that are not Lua codecs (and for NULL). */
void mt_lua_codec_release(const mt_codec_t *codec);

bool mt_lua_codec_is(const mt_codec_t *codec);

/* Calls into the codec that failed (errors, limits, nonsense results) since it was built. */
uint64_t mt_lua_codec_failures(const mt_codec_t *codec);

/* Closes the calling thread's Lua codec state now (threads do it when they end; tests on the
 * main thread call it). Every decoder state of this thread must be freed first. */
void mt_lua_codec_thread_end(void);

#endif
