# redis_rb_client.rb - redis-rb (Debian's ruby-redis, a real Ruby Redis client) driven by
# meltemi's integration tests: `ruby redis_rb_client.rb <scenario> <host> <port>` runs one
# scenario and prints its outcome as one JSON line. Every call has a timeout, so a hang
# becomes a reported error, never a stuck test.
require "json"
require "redis"

scenario, host, port = ARGV

def client(host, port)
  Redis.new(host: host, port: Integer(port), timeout: 5, reconnect_attempts: 0)
end

def settle
  { "value" => yield }
rescue Redis::BaseError => e
  { "error" => e.message }
end

# MULTI / INCR counter / SET tx-key / EXEC (redis-rb's block form), then a GET on the same
# connection: the transaction must be over, the connection usable.
# ping: a PING first, which makes it a transaction that needs a lease through meltemi (one of
# keyed data commands only, written whole, runs on a shared connection instead).
def transaction(host, port, ping = false)
  r = client(host, port)
  out = { "multi" => settle { r.multi { |tx| tx.ping if ping; tx.incr("counter"); tx.set("tx-key", "v") } } }
  out["after"] = settle { r.get("counter") }
  r.close
  out
end

# XREAD BLOCK 0 from one client (in a thread), then a GET from another client of the same
# listener (with one worker: of the same upstream connection).
def xread_block(host, port)
  blocker = client(host, port)
  other = client(host, port)
  blocked = Thread.new { settle { blocker.xread("stream", "$", block: 0) } }
  # Let the XREAD go first: it is answered at once if refused, never if forwarded.
  first = blocked.join(1) ? blocked.value : nil
  out = { "xread" => first, "get" => settle { other.get("probe") } }
  blocked.kill
  [blocker, other].each(&:close)
  out
end

out = case scenario
      when "transaction" then transaction(host, port)
      when "transaction-ping" then transaction(host, port, true)
      when "xread-block" then xread_block(host, port)
      else raise ArgumentError, "unknown scenario #{scenario}"
      end
puts JSON.generate(out)
