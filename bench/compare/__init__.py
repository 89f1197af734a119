"""Side-by-side benchmark: sessionquorum against etcd and Redis on one workload (`make bench-compare`).

Modules, one idea each: workload (operations, mixes, cell order), procs (processes we start),
tls (certificates the anchors borrow), sys_sessionquorum / sys_etcd / sys_redis (a server and
its targets each), driver (one timed cell), report (medians, ratios, table, JSON, PNG), cli.
"""
