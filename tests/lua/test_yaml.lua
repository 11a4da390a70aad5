-- The YAML loader (runtime/luajit/yaml.c via require "meltemi.c"): scalar resolution, line
-- luacheck: max line length 120 (expected messages are quoted whole)
-- numbers, multi-document streams, errors with file:line, aliases; and the other C helpers.
local H = dofile("tests/lua/helper.lua")
local C = require "meltemi.c"
local NULL = C.null

H.test("plain scalars resolve like YAML 1.2 core; quoted ones stay strings", function()
  local docs = assert(C.yaml_load([[
int: 6379
neg: -3
hex: 0x1F
oct: 0o17
float: 1.5
exp: 1e3
yes: true
no: False
nul: ~
quoted: "6379"
single: 'true'
word: yes
octal_looking: 08
version: 1.2.3
empty:
]], "s.yaml"))
  local d = docs[1]
  H.eq(d.int, 6379, "int"); H.eq(d.neg, -3, "neg"); H.eq(d.hex, 31, "hex"); H.eq(d.oct, 15, "oct")
  H.eq(d.float, 1.5, "float"); H.eq(d.exp, 1000, "exp")
  H.eq(d.yes, true, "true"); H.eq(d.no, false, "False")
  H.eq(d.nul, nil, "~ leaves the key out"); H.eq(d.empty, nil, "empty value is null")
  H.eq(d.quoted, "6379", "double-quoted"); H.eq(d.single, "true", "single-quoted")
  H.eq(d.word, "yes", "YAML 1.1 booleans are strings in 1.2")
  H.eq(d.octal_looking, 8, "08 is decimal 8 in the core schema")
  H.eq(d.version, "1.2.3", "not a number")
end)

H.test("explicit tags", function()
  local docs = assert(C.yaml_load("a: !!str 10\nb: !!int '10'\nc: !!float 1\n", "t.yaml"))
  H.eq(docs[1].a, "10", "!!str"); H.eq(docs[1].b, 10, "!!int"); H.eq(docs[1].c, 1, "!!float")
  local _, err = C.yaml_load("a: !!int x\n", "t.yaml")
  H.eq(err, 't.yaml:1: yaml: value "x" does not fit its tag !!int', "bad !!int")
  _, err = C.yaml_load("a:\n  b: !custom 1\n", "t.yaml")
  H.eq(err, "t.yaml:2: yaml: unsupported tag !custom", "unknown tag")
end)

H.test("line numbers of keys, items and documents", function()
  local docs, lines = assert(C.yaml_load("# comment\na: 1\nlist:\n  - x\n  - k: v\n---\nb: 2\n", "l.yaml"))
  local d = docs[1]
  H.eq(lines[d][0], 2, "document mapping starts at its first key")
  H.eq(lines[d].a, 2, "key a"); H.eq(lines[d].list, 3, "key list")
  H.eq(lines[d].list and lines[d.list][1], 4, "item 1"); H.eq(lines[d.list][2], 5, "item 2")
  H.eq(lines[d.list[2]].k, 5, "nested key")
  H.eq(lines[d][-1], "map", "kind of a mapping"); H.eq(lines[d.list][-1], "seq", "kind of a list")
  H.eq(lines[docs][1], 2, "doc 1 line"); H.eq(lines[docs][2], 7, "doc 2 line")
end)

H.test("multi-document streams keep empty documents as null", function()
  local docs, lines = assert(C.yaml_load("---\na: 1\n---\n---\n# nothing\n---\nb: 2\n", "m.yaml"))
  H.eq(#docs, 4, "documents"); H.eq(docs[1].a, 1, "first"); H.eq(docs[2], NULL, "empty one")
  H.eq(docs[3], NULL, "comment-only one"); H.eq(docs[4].b, 2, "last"); H.eq(lines[docs][4], 7, "line of the last")
  docs = assert(C.yaml_load("", "e.yaml")); H.eq(#docs, 0, "empty file")
  docs = assert(C.yaml_load("# only a comment\n", "e.yaml")); H.eq(#docs, 0, "comment only")
end)

H.test("null sequence items are the null sentinel so indexes stay put", function()
  local docs = assert(C.yaml_load("l: [1, null, 3]\n", "n.yaml"))
  H.eq(#docs[1].l, 3, "length"); H.eq(docs[1].l[2], NULL, "null item")
end)

H.test("syntax errors say file:line: yaml: message", function()
  local docs, err = C.yaml_load("a: 1\nb:\n  c: 1\n   d: 2\n", "bad.yaml")
  H.eq(docs, nil, "no documents")
  H.ok(err:match("^bad%.yaml:4: yaml: "), "got " .. err)
  err = select(2, C.yaml_load("a: [1, 2\n", "flow.yaml"))
  H.ok(err:match("^flow%.yaml:%d+: yaml: did not find expected"), "got " .. err)
  err = select(2, C.yaml_load("a: 1\na: 2\n", "dup.yaml"))
  H.eq(err, 'dup.yaml:2: yaml: duplicate key "a"', "duplicate key")
  err = select(2, C.yaml_load("a: \"\\xff\"\n\255\n", "utf.yaml"))
  H.ok(err and err:match("^utf%.yaml:%d+: yaml: "), "invalid UTF-8: " .. tostring(err))
end)

H.test("anchors and aliases are expanded into copies; merge keys rejected", function()
  local docs, lines = assert(C.yaml_load("base: &b\n  x: 1\ncopy: *b\nname: &n hello\nagain: *n\n", "a.yaml"))
  local d = docs[1]
  H.eq(d.copy.x, 1, "aliased mapping"); H.ok(d.copy ~= d.base, "a copy, not the same table")
  H.eq(lines[d.copy].x, 2, "copy keeps the anchor's lines"); H.eq(d.again, "hello", "scalar alias")
  local _, err = C.yaml_load("a: *nope\n", "a.yaml")
  H.eq(err, "a.yaml:1: yaml: alias *nope refers to an unknown or unfinished anchor", "unknown anchor")
  _, err = C.yaml_load("b: &b {x: 1}\nc:\n  <<: *b\n", "a.yaml")
  H.eq(err, "a.yaml:3: yaml: merge keys (<<) are not supported", "merge key")
end)

H.test("alias bombs are bounded", function()
  local t = { "a: &a [x, x, x, x, x, x, x, x, x, x]" }
  local prev = "a"
  for i = 1, 8 do
    local name = "l" .. i
    t[#t + 1] = string.format("%s: &%s [*%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s]", name, name,
      prev, prev, prev, prev, prev, prev, prev, prev, prev, prev)
    prev = name
  end
  local docs, err = C.yaml_load(table.concat(t, "\n") .. "\n", "bomb.yaml")
  H.eq(docs, nil, "refused")
  H.ok(err:find("document too large", 1, true), err)
end)

H.test("deep nesting is refused, not a crash", function()
  local _, err = C.yaml_load(string.rep("[", 500) .. string.rep("]", 500), "deep.yaml")
  H.ok(err and err:find("nesting deeper than", 1, true), tostring(err))
end)

H.test("complex keys are refused", function()
  local _, err = C.yaml_load("? [a, b]\n: 1\n", "k.yaml")
  H.eq(err, "k.yaml:1: yaml: mapping keys must be scalars", "sequence as key")
end)

H.test("base64_decode accepts padded standard base64 only", function()
  H.eq(C.base64_decode("dGVzdHJlZGlzCg=="), "testredis\n", "blog value")
  H.eq(C.base64_decode("dGVzdHJlZGlz"), "testredis", "no padding needed")
  H.eq(C.base64_decode(""), "", "empty")
  H.eq(C.base64_decode("YQ==\n"), "a", "line break ignored")
  local v, err = C.base64_decode("dGVzd!==")
  H.eq(v, nil, "bad char"); H.eq(err, "illegal base64 data at input byte 5", "message")
  v, err = C.base64_decode("YQ")
  H.eq(v, nil, "missing padding"); H.ok(err:find("multiple of 4", 1, true), err)
  H.eq(C.base64_decode("YQ==YQ=="), nil, "data after padding")
end)

H.test("listdir is sorted; readfile reads bytes; both report errors", function()
  local names = assert(C.listdir("tests/lua/fixtures/blog"))
  for i = 2, #names do H.ok(names[i - 1] < names[i], "sorted: " .. table.concat(names, " ")) end
  H.ok(#names >= 9, "every fixture listed")
  local v, err = C.listdir("tests/lua/no-such-dir")
  H.eq(v, nil, "missing dir"); H.eq(err, "tests/lua/no-such-dir: No such file or directory", "message")
  H.ok(C.readfile("tests/lua/fixtures/blog/step1.yaml"):find("dGVzdHJlZGlzCg==", 1, true), "content")
  v, err = C.readfile("tests/lua")
  H.eq(v, nil, "directory"); H.eq(err, "tests/lua: not a regular file", "message")
end)

H.test("nothing is loaded from disk by require", function()
  H.eq(package.path, "", "package.path"); H.eq(package.cpath, "", "package.cpath")
  H.ok(require("lpeg").match(require("lpeg").P("a"), "a"), "lpeg is preloaded")
  H.ok(not pcall(require, "tests.lua.helper"), "a file module cannot be required")
end)

H.run()
