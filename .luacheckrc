-- luacheck configuration for meltemi's Lua (LuaJIT, Lua 5.1 semantics).
std = "luajit"
max_line_length = 110
codes = true
unused_args = false
exclude_files = { "build*/**", "node_modules/**" }
