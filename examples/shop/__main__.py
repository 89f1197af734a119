"""`make shop`: a local 3-node cluster and two app servers of the shop, until Ctrl-C.

python -m examples.shop [--data-dir ./shop-data] [--ports 8001,8002]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from sessionquorum.cluster import LocalCluster

LEADER_TIMEOUT_S = 30.0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.shop", description=__doc__.split("\\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("shop-data"))
    parser.add_argument("--ports", default="8001,8002")
    args = parser.parse_args()
    # SIGTERM (a service manager, `kill`) stops everything as Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    cluster = LocalCluster(args.data_dir, nodes=3)
    servers: list[subprocess.Popen[bytes]] = []
    cluster.start()
    try:
        cluster.wait_for_leader(LEADER_TIMEOUT_S)
        for n, port in enumerate(args.ports.split(","), start=1):
            env = {
                **os.environ,
                "SHOP_CLUSTER_DIR": str(args.data_dir),
                "SHOP_NAME": f"app server {n} (:{port})",
            }
            command = [sys.executable, "-m", "uvicorn", "--factory", "examples.shop.app:from_environment"]
            servers.append(subprocess.Popen([*command, "--host", "127.0.0.1", "--port", port], env=env))
            print(f"app server {n}: http://localhost:{port}/", flush=True)
        print("Ctrl-C stops the app servers and the cluster", flush=True)
        for server in servers:
            server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait()
        cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
