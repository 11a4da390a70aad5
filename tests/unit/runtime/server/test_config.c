/*
 * test_config.c - mt_config_compile as the runtime calls it: on directories written here,
 * a valid configuration pushes the snapshot, an invalid one pushes file:line errors, and
 * neither ever raises or unbalances the Lua stack. (The Lua environment it runs in is tested
 * in tests/unit/runtime/luajit/test_lua_env.c.)
 */
#include "runtime/server/config.h"
#include "runtime/luajit/lua_env.h"

#include <criterion/criterion.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char tmpdir[64];
static lua_State *L;

static void config_setup(void)
{
    strcpy(tmpdir, "/tmp/meltemi-config-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
    L = mt_lua_new();
    cr_assert_not_null(L);
}

static void config_teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    cr_assert_eq(system(cmd), 0);
    lua_close(L);
}

static void write_file(const char *name, const char *text)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

static const char service_entry[] = "apiVersion: networking.istio.io/v1beta1\n"
                                    "kind: ServiceEntry\n"
                                    "metadata:\n"
                                    "  name: redis-single\n"
                                    "  namespace: redis\n"
                                    "spec:\n"
                                    "  hosts: [redis-single.redis.svc.cluster.local]\n"
                                    "  addresses: [127.0.0.10]\n"
                                    "  ports:\n"
                                    "    - {number: 6379, name: tcp-redis}\n"
                                    "  resolution: STATIC\n"
                                    "  endpoints:\n"
                                    "    - {address: 127.0.0.1, ports: {tcp-redis: 6390}}\n";

static const char redis_destination[] = "apiVersion: redis.aeraki.io/v1alpha1\n"
                                        "kind: RedisDestination\n"
                                        "metadata: {name: redis-single, namespace: redis}\n"
                                        "spec:\n"
                                        "  host: redis-single\n"
                                        "  trafficPolicy:\n"
                                        "    connectionPool:\n"
                                        "      redis:\n"
                                        "        auth:\n"
                                        "          secret:\n"
                                        "            name: missing-secret\n";

/* The string at t[i][field] (t at the top of the stack), or NULL; leaves the stack as is. */
static const char *string_at(int i, const char *field)
{
    static char buf[256];
    lua_rawgeti(L, -1, i);
    lua_getfield(L, -1, field);
    const char *s = lua_tostring(L, -1);
    snprintf(buf, sizeof buf, "%s", s ? s : "");
    lua_pop(L, 2);
    return s ? buf : NULL;
}

TestSuite(config, .init = config_setup, .fini = config_teardown);

Test(config, valid_directory_pushes_the_snapshot)
{
    write_file("se.yaml", service_entry);
    int top = lua_gettop(L);
    cr_assert_eq(mt_config_compile(L, tmpdir), 0);
    cr_assert_eq(lua_gettop(L), top + 1, "exactly one value pushed");
    cr_assert(lua_istable(L, -1));
    lua_getfield(L, -1, "version");
    cr_assert_eq(lua_tointeger(L, -1), 1);
    lua_pop(L, 1);
    lua_getfield(L, -1, "listeners");
    cr_assert_eq(lua_objlen(L, -1), 1);
    cr_assert_str_eq(string_at(1, "name"), "127.0.0.10:6379");
    cr_assert_str_eq(string_at(1, "protocol"), "redis");
    cr_assert_str_eq(string_at(1, "cluster"),
                     "outbound|6379||redis-single.redis.svc.cluster.local");
    lua_pop(L, 1);
    lua_getfield(L, -1, "clusters");
    lua_getfield(L, -1, "outbound|6379||redis-single.redis.svc.cluster.local");
    lua_getfield(L, -1, "endpoints");
    lua_rawgeti(L, -1, 1);
    lua_getfield(L, -1, "port");
    cr_assert_eq(lua_tointeger(L, -1), 6390);
}

Test(config, invalid_directory_pushes_errors_with_file_and_line)
{
    write_file("se.yaml", service_entry);
    write_file("rd.yaml", redis_destination);
    int top = lua_gettop(L);
    cr_assert_eq(mt_config_compile(L, tmpdir), -1);
    cr_assert_eq(lua_gettop(L), top + 1);
    cr_assert(lua_istable(L, -1));
    cr_assert_eq(lua_objlen(L, -1), 1);
    lua_rawgeti(L, -1, 1);
    char want[512];
    snprintf(want, sizeof want,
             "%s/rd.yaml:11: RedisDestination/redis-single: "
             "spec.trafficPolicy.connectionPool.redis.auth.secret.name: Secret \"missing-secret\" "
             "not found in namespace redis",
             tmpdir);
    cr_assert_str_eq(lua_tostring(L, -1), want);
}

Test(config, yaml_syntax_error_is_reported_not_raised)
{
    write_file("bad.yml", "a: [1\n");
    cr_assert_eq(mt_config_compile(L, tmpdir), -1);
    lua_rawgeti(L, -1, 1);
    char prefix[128];
    snprintf(prefix, sizeof prefix, "%s/bad.yml:2: yaml: ", tmpdir);
    cr_assert(strncmp(lua_tostring(L, -1), prefix, strlen(prefix)) == 0, "got %s",
              lua_tostring(L, -1));
}

Test(config, missing_directory_is_an_error)
{
    cr_assert_eq(mt_config_compile(L, "/nonexistent/meltemi-config"), -1);
    lua_rawgeti(L, -1, 1);
    cr_assert_str_eq(lua_tostring(L, -1), "/nonexistent/meltemi-config: No such file or directory "
                                          "(cannot read the configuration directory)");
}

Test(config, repeated_compiles_in_one_state_are_independent)
{
    write_file("se.yaml", service_entry);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(mt_config_compile(L, tmpdir), 0);
        lua_pop(L, 1);
    }
    write_file("rd.yaml", redis_destination);
    cr_assert_eq(mt_config_compile(L, tmpdir), -1);
    lua_pop(L, 1);
    unlink(strcat(strcpy((char[128]){0}, tmpdir), "/rd.yaml"));
    cr_assert_eq(mt_config_compile(L, tmpdir), 0);
    lua_pop(L, 1);
    cr_assert_eq(lua_gettop(L), 0);
}
