-- luacheck: no max line length (inline YAML fixtures and expected messages)
-- Kafka and ZooKeeper ports: plain TCP listeners and clusters whose codec names the metrics
-- decoder (runtime/proxy/tcp/tcp_observe.c), from port names, appProtocol and an
-- ApplicationProtocol.
local H = dofile("tests/lua/helper.lua")

local SE = [[
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: data, namespace: demo}
spec:
  hosts: [data.demo.svc.cluster.local]
  addresses: [127.0.0.31]
  ports:
    - {number: 9092, name: tcp-kafka-broker}
    - {number: 9093, name: kafka}
    - {number: 2181, name: tcp-zookeeper}
    - {number: 2182, name: zookeeper-client}
    - {number: 2183, name: tcp-metaprotocol-zk-client}
    - {number: 5000, name: tcp-other}
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
]]

local AP = [[
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: ApplicationProtocol
metadata: {name: zk, namespace: istio-system}
spec:
  protocol: zk
  codec: aeraki.meta_protocol.codec.zookeeper
]]

H.test("kafka / zookeeper port names give tcp listeners with the decoder's codec", function()
  local s = H.snapshot_of({ ["a.yaml"] = SE, ["b.yaml"] = AP })
  for port, codec in pairs({ [9092] = "kafka", [9093] = "kafka", [2181] = "zookeeper",
                             [2182] = "zookeeper", [2183] = "zookeeper" }) do
    local l = H.listener(s, "127.0.0.31:" .. port)
    H.eq(l.protocol, "tcp", port .. " protocol")
    H.eq(l.codec, codec, port .. " codec")
    H.eq(l.metaprotocol, nil, port .. " no metaprotocol routes")
  end
  local other = H.listener(s, "127.0.0.31:5000")
  H.eq(other.protocol, "tcp", "plain"); H.eq(other.codec, nil, "plain tcp has no codec")
  H.eq(s.clusters["outbound|9092||data.demo.svc.cluster.local"].protocol, "tcp", "cluster is tcp")
end)

H.test("a Service port's appProtocol kafka selects the decoder", function()
  local svc = [[
apiVersion: v1
kind: Service
metadata: {name: broker, namespace: demo}
spec:
  clusterIP: 127.0.0.32
  ports: [{port: 9092, name: client, appProtocol: kafka}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: broker-1, namespace: demo, labels: {kubernetes.io/service-name: broker}}
addressType: IPv4
ports: [{name: client, port: 19092}]
endpoints: [{addresses: [127.0.0.1]}]
]]
  local s = H.snapshot_of({ ["a.yaml"] = svc })
  local l = H.listener(s, "127.0.0.32:9092")
  H.eq(l.protocol, "tcp", "protocol"); H.eq(l.codec, "kafka", "codec from appProtocol")
end)

H.test("an ApplicationProtocol kafka takes no script", function()
  local e = H.errors_of({ ["b.yaml"] = AP:gsub("codec%.zookeeper", "codec.kafka") .. "  script: 'return {}'\n" })
  H.find(e, "spec.script: only a Lua codec (codec: lua) takes a script", "script refused")
end)

H.run()
